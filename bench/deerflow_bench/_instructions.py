"""The controller's CPU instructions per task, counted by callgrind (``deerflow bench
instructions``): the measure of a change to the controller's per-task work that the 2-core VM's
clock cannot give (its speed drifts by a third within minutes, so wall-clock pairs of a 10 %
change disagree in sign).

The real daemons as processes, through the public SDK as the throughput benchmarks drive them:
``deerflow-controller`` runs under ``valgrind --tool=callgrind`` with instrumentation off (so
start-up and the warm-up job cost no counting), two agents of 64 slots run as usual, and one
no-op job of ``tasks`` tasks (submit, then every result streamed) is counted between
``callgrind_control -i on`` and ``-i off``. Traced (``--traced``): every task traced and exported
to a local OTLP receiver, as ``deerflow bench tracing`` does.

What it does not measure: anything off the controller (agents, client, receiver) and the cost of
time itself (the controller runs about 50 times slower under callgrind, so the agents' results
arrive in larger messages than at full speed and per-message costs weigh less than they do
there). Counts repeat within about 2 % between runs of the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster
from ._throughput import machine
from ._tracing_overhead import ReceiverProcess, extra_environ, traced_env

__all__ = ["MissingTool", "instructions"]

_TOTALS = re.compile(rb"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


class MissingTool(RuntimeError):
    """valgrind (or its callgrind_control) is not installed."""


def _tools() -> tuple[str, str]:
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        raise MissingTool(
            "deerflow bench instructions needs valgrind and its callgrind_control on the PATH; "
            "install valgrind (Debian: apt install valgrind) and run it again"
        )
    return valgrind, control


def _control(control: str, *args: str) -> None:
    subprocess.run([control, *args], check=True, capture_output=True, timeout=60)


def counted(out_dir: Path) -> int:
    """Instructions in the callgrind dumps written to ``out_dir``."""
    total = 0
    for path in out_dir.glob("callgrind.out.*"):
        # A dump's "totals:" line (at its end) holds its count; its "summary:" line, 0 or the
        # same number, depending on callgrind's version.
        total += max((int(m.group(1)) for m in _TOTALS.finditer(path.read_bytes())), default=0)
    return total


async def instructions(
    tasks: int = 5000, *, traced: bool = False, slots: int = 64, prefetch: int = 64
) -> dict[str, Any]:
    """Count the controller's instructions for one no-op job of ``tasks`` (see the module
    docstring). Raises :class:`MissingTool` without valgrind."""
    valgrind, control = _tools()
    with tempfile.TemporaryDirectory(prefix="deerflow-callgrind-") as tmp:
        out_dir = Path(tmp)
        wrapper = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir / 'callgrind.out.%p'}",
            f"--log-file={out_dir / 'valgrind.log'}",
        ]
        cluster = Cluster(
            2,
            agent_args=["--slots", str(slots)],
            controller_args=["--prefetch", str(prefetch)],
            controller_wrapper=wrapper,
            ready_timeout_s=300.0,
        )
        async with contextlib.AsyncExitStack() as stack:
            provider = None
            env: dict[str, str] = {}
            if traced:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                receiver = await ReceiverProcess.start()
                stack.push_async_callback(receiver.stop)
                env = traced_env(receiver.endpoint, 2 * tasks + 1, 4096)
                provider = TracerProvider()
                provider.add_span_processor(
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
                )
                stack.callback(provider.shutdown)
            with extra_environ(env):
                await stack.enter_async_context(cluster)
            client = await stack.enter_async_context(
                AsyncClient(cluster.address, timeout_s=600, tracer_provider=provider)
            )
            await client.agents(wait_for=2, timeout_s=300)
            assert cluster.controller is not None
            pid = str(cluster.controller.pid)
            work = [Task(f"t{i}", "echo", f"{i:08d}".encode()) for i in range(tasks)]
            await _job(client, work)  # warm: imports, first predictions, gRPC's buffers
            await asyncio.to_thread(_control, control, "-i", "on", pid)
            started = time.perf_counter()
            done = await _job(client, work)
            seconds = time.perf_counter() - started
            await asyncio.to_thread(_control, control, "-i", "off", pid)
        # The controller stopped: callgrind wrote what it counted (the job alone) as it exited.
        total = counted(out_dir)
    if done != tasks:
        raise RuntimeError(f"only {done} of {tasks} results arrived")
    if total <= 0:
        raise RuntimeError("callgrind wrote no counts for the controller")
    return {
        "workload": "instructions",
        "method": "the controller under callgrind, counting one no-op job's submit to last "
        "result (instrumentation off for start-up and a warm-up job of the same size)",
        "tasks": tasks,
        "traced": traced,
        "agents": 2,
        "slots": slots,
        "prefetch": prefetch,
        "controller_instructions": total,
        "instructions_per_task": round(total / tasks),
        "seconds_under_callgrind": round(seconds, 2),
        "machine": machine(),
    }


async def _job(client: AsyncClient, work: list[Task]) -> int:
    job = await client.submit(work)
    done = 0
    async for _ in job.results():
        done += 1
    return done
