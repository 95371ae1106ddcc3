"""``deerflow bench startup``: how long ``deerflow-controller --local-agents 2`` takes to be of use.

Each run starts the controller as a user does (gRPC on a free loopback port; the HTTP side on
one too unless ``http`` is off; two local agents) and measures, from just before the spawn:

- ``ready_s``: to the ready line (``deerflow-controller listening on ...``);
- ``agents_connected_s``: to both agents listed by ``AsyncClient.agents(wait_for=2)``;
- ``agent_start_to_connected_s``: from each agent process's own start to the controller's
  ``connected_at`` for it (process start times from /proc, tick resolution: 10 ms);
- ``agent_spawned_after_s``: from the controller's process start to each agent's.

Then where the time goes: ``python -X importtime`` of a controller (no local agents) up to its
ready line and of one agent up to connected, as self time per top-level package, and the wall
time of the command line's ``deerflow --help`` and ``deerflow submit --help``.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from deerflow_controller.client import AsyncClient
from deerflow_controller.service.launcher import AgentProcess

from ._launcher import READY_PREFIX, ControllerProcess
from ._throughput import machine

LOCAL_AGENTS = 2


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def _bytecode() -> dict[str, bool]:
    """Whether the modules' compiled bytecode is on disk (else every process compiles every
    module it imports from source: ``PYTHONDONTWRITEBYTECODE`` and an install without
    ``--compile-bytecode``, such as ``make venv``'s)."""
    import importlib.util

    import aiohttp

    import deerflow_controller

    def cached(module: Any) -> bool:
        return Path(importlib.util.cache_from_source(module.__file__)).exists()

    return {
        "dont_write_bytecode": bool(sys.flags.dont_write_bytecode),
        "project_cached": cached(deerflow_controller),
        "dependencies_cached": cached(aiohttp),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _one_run(http: bool) -> dict[str, Any]:
    args = ["--local-agents", str(LOCAL_AGENTS)]
    args += ["--http-port", str(_free_port()) if http else "0"]
    t0_wall = time.time()
    t0 = time.perf_counter()
    controller = await ControllerProcess.start(args)
    ready = time.perf_counter() - t0
    try:
        async with AsyncClient(controller.address, timeout_s=60) as client:
            agents = await client.agents(wait_for=LOCAL_AGENTS, timeout_s=60)
            connected = time.perf_counter() - t0
        parent = psutil.Process(controller.pid)
        born = parent.create_time()
        starts = {child.pid: t0_wall + (child.create_time() - born) for child in parent.children()}
    finally:
        await controller.stop()
    # Agent ids are local-<n>-<controller pid>; children in spawn order match them in turn.
    child_starts = [starts[pid] for pid in sorted(starts)][:LOCAL_AGENTS]
    connected_at = [a.connected_at for a in sorted(agents, key=lambda a: a.agent_id)]
    return {
        "ready_s": ready,
        "agents_connected_s": connected,
        "agent_start_to_connected_s": [
            c - s for c, s in zip(connected_at, child_starts, strict=True)
        ],
        "agent_spawned_after_s": [s - t0_wall for s in child_starts],
    }


def _import_offenders(log: str, top: int = 10) -> dict[str, Any]:
    """Self time per top-level package from ``-X importtime`` lines, the largest ``top``."""
    per_package: collections.Counter[str] = collections.Counter()
    for line in log.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3:
            continue  # a line interleaved with other output
        per_package[fields[2].strip().split(".")[0]] += int(fields[0])
    return {
        "total_ms": round(sum(per_package.values()) / 1000, 1),
        "top_ms": {name: round(us / 1000, 1) for name, us in per_package.most_common(top)},
    }


async def _importtime() -> dict[str, Any]:
    """A controller (no local agents, no HTTP) to its ready line and one agent to connected,
    each with ``PYTHONPROFILEIMPORTTIME`` and its stderr in a file of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        ctl_log, agent_log = Path(tmp, "controller"), Path(tmp, "agent")
        with ctl_log.open("wb") as err:  # noqa: ASYNC230 (a temporary file, once)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "deerflow_controller.main",
                "--port",
                "0",
                "--http-port",
                "0",
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        controller = ControllerProcess(proc, "deerflow-controller")
        try:
            controller.address = await controller._await_ready_line(READY_PREFIX, 60)
            with agent_log.open("wb") as err:  # noqa: ASYNC230
                agent_proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-X",
                    "importtime",
                    "-m",
                    "deerflow_agent",
                    "--controller",
                    controller.address,
                    "--id",
                    "importtime",
                    stderr=err,
                )
            agent = AgentProcess(agent_proc, "importtime")
            try:
                async with AsyncClient(controller.address, timeout_s=60) as client:
                    await client.agents(wait_for=1, timeout_s=60)
            finally:
                await agent.stop()
        finally:
            await controller.stop()
        logs = [p.read_text(errors="replace") for p in (ctl_log, agent_log)]
        return {"controller": _import_offenders(logs[0]), "agent": _import_offenders(logs[1])}


async def _cli_wall_s(args: list[str], runs: int) -> dict[str, float]:
    """Wall time of ``deerflow *args`` (this interpreter), process start to exit."""
    script = "import sys; from deerflow_controller.cli import main; sys.exit(main())"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        code = await proc.wait()
        if code != 0:
            raise RuntimeError(f"deerflow {' '.join(args)} exited with {code}")
        times.append(time.perf_counter() - t0)
    return _stats(times)


async def startup(runs: int, http: bool, cli_runs: int) -> dict[str, Any]:
    load_before = psutil.getloadavg()
    samples = [await _one_run(http) for _ in range(runs)]
    out: dict[str, Any] = {"workload": "startup", "runs": runs, "local_agents": LOCAL_AGENTS}
    for key in ("ready_s", "agents_connected_s"):
        out[key] = _stats([s[key] for s in samples])
        out[f"{key}_each"] = [round(s[key], 3) for s in samples]
    for key in ("agent_start_to_connected_s", "agent_spawned_after_s"):
        out[key] = _stats([v for s in samples for v in s[key]])
    out["agents_connected_under_1s"] = sum(s["agents_connected_s"] < 1.0 for s in samples)
    out["importtime"] = await _importtime()
    out["cli_s"] = {
        "deerflow --help": await _cli_wall_s(["--help"], cli_runs),
        "deerflow submit --help": await _cli_wall_s(["submit", "--help"], cli_runs),
    }
    out["http"] = http
    out["bytecode"] = _bytecode()
    out["loadavg_1m_before_after"] = [round(load_before[0], 2), round(psutil.getloadavg()[0], 2)]
    out["machine"] = machine()
    return out
