"""The three systems of ``deerflow bench research``, each run on the same jobs against a fresh
simulator: the fork and DeerFlow 2.0 as N side-by-side server processes
(``_baseline_process``), and the control plane (a controller and N agents) through the SDK.

Each run returns a :class:`SystemRun`: every job's record, the slot time the system made
available, the CPU seconds of all its processes, and what the simulator saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from deerflow_controller.client import AsyncClient, Task, TaskEvent

from ._baseline_http import JobRecord
from ._launcher import Cluster, SimulatorProcess
from ._research_workload import Call, Job, jobs_to_json

KEYS = {"llm": "research-llm", "search": "research-search", "crawl": "research-crawl"}
RATE_KEYS = {
    "llm": f"llm/{KEYS['llm']}/sim-model",
    "search": f"search/{KEYS['search']}",
    "crawl": f"crawl/{KEYS['crawl']}",
}
START_MARGIN_S = 1.5
"""Between launching a system's processes and its first arrival: every process is up by then."""


@dataclass(frozen=True, slots=True)
class Providers:
    """The simulated providers: quotas per shared key, error mix, speed."""

    llm_rpm: float = 900.0
    search_rpm: float = 300.0
    crawl_rpm: float = 300.0
    error_rate: float = 0.05
    time_scale: float = 0.1
    seed: int = 7

    def sim_args(self) -> list[str]:
        return [
            "--time-scale", str(self.time_scale),
            "--seed", str(self.seed),
            "--error-rate", str(self.error_rate),
            "--key", f"{KEYS['llm']}=rpm:{self.llm_rpm:g},tpm:100000000",
            "--key", f"{KEYS['search']}=rpm:{self.search_rpm:g}",
            "--key", f"{KEYS['crawl']}=rpm:{self.crawl_rpm:g}",
        ]  # fmt: skip

    def limits_toml(self) -> str:
        """What an operator tells the controller about the keys: the same quotas, and a bucket
        as deep as the simulator's (``burst_s`` 0.9 of its one second, not the default 0.5)."""
        return "".join(
            f'[[ratelimit.keys]]\npattern = "{pattern}"\nrpm = {rpm}\nburst_s = 0.9\n'
            for pattern, rpm in (
                (f"llm/{KEYS['llm']}/*", self.llm_rpm),
                (RATE_KEYS["search"], self.search_rpm),
                (RATE_KEYS["crawl"], self.crawl_rpm),
            )
        )


@dataclass
class SystemRun:
    system: str
    records: list[JobRecord]
    t0: float
    slot_s: float
    """Available slot time (slots the system provisions, over the run)."""
    slots: int
    """Slots provisioned (the executors' width; for the fork, per research request)."""
    cpu_s: float
    provider: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


async def _sim_stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/stats") as resp:
        keys = (await resp.json())["keys"]
    out: dict[str, int] = defaultdict(int)
    for key in KEYS.values():
        stats = keys.get(key, {})
        for name in ("served", "throttled", "failed", "invalid", "cancelled"):
            out[name] += int(stats.get(name, 0))
    return dict(out)


# ------------------------------------------------------------------ the baselines


async def run_baseline(
    system: str, jobs: list[Job], providers: Providers, processes: int, deadline_s: float,
    llm_cap: int,
) -> SystemRun:  # fmt: skip
    """N processes of ``system`` ("fork" or "deerflow2"), job i going to process i mod N (a
    round-robin load balancer)."""
    sim = await SimulatorProcess.start(providers.sim_args())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time() + START_MARGIN_S
            procs = []
            for p in range(processes):
                config = {
                    "system": system,
                    "t0": t0,
                    "deadline_s": deadline_s,
                    "scale": providers.time_scale,
                    "llm_cap": llm_cap,
                    "providers": {
                        "base_url": sim.url,
                        "llm_key": KEYS["llm"],
                        "search_key": KEYS["search"],
                        "crawl_key": KEYS["crawl"],
                    },
                    "jobs": jobs_to_json(jobs[p::processes]),
                }
                cfg, out = Path(tmp) / f"p{p}.json", Path(tmp) / f"p{p}.out.json"
                cfg.write_text(json.dumps(config))
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "deerflow_bench._baseline_process", str(cfg), str(out)
                )
                procs.append((proc, out))
            results = []
            for proc, out in procs:
                if await proc.wait() != 0:
                    raise RuntimeError(f"a {system} baseline process exited {proc.returncode}")
                results.append(json.loads(out.read_text()))
        provider = await _sim_stats(sim.url)
    finally:
        await sim.stop()
    records = [JobRecord(**_record_fields(r)) for res in results for r in res["records"]]
    end = max((r.end for r in records), default=t0)
    width = 3 * processes
    slot_s = (
        sum(float(res["slot_s"]) for res in results)
        if system == "fork"
        else width * (end - t0)  # the execution pools, idle or not, for the whole run
    )
    extra: dict[str, Any] = {
        "max_running_per_process": max(int(res.get("max_running_seen", 0)) for res in results)
    }
    if system == "fork":
        extra["limiter_wait_s"] = round(sum(res["limiter_wait_s"] for res in results), 2)
    else:
        extra["llm_retries"] = sum(res["llm_retries"] for res in results)
        extra["llm_cap_per_process"] = llm_cap
    return SystemRun(
        system, records, t0, slot_s, width, sum(res["cpu_s"] for res in results), provider, extra
    )


def _record_fields(r: dict[str, Any]) -> dict[str, Any]:
    names = ("id", "arrival", "end", "failed", "failed_steps", "tool_errors", "no_content",
             "cacheable", "cache_hits", "calls", "busy_s")  # fmt: skip
    return {n: r[n] for n in names}


# ------------------------------------------------------------------ the control plane


def _task(task_id: str, call: Call, deps: list[str]) -> Task:
    if call.kind == "llm":
        return Task(
            task_id, "llm", call.payload, depends_on=deps, rate_keys=(RATE_KEYS["llm"],),
            est_tokens=len(json.dumps(call.payload)) / 4 + 300, timeout_s=120,
        )  # fmt: skip
    return Task(task_id, call.kind, call.payload, depends_on=deps,
                rate_keys=(RATE_KEYS[call.kind],), timeout_s=60)  # fmt: skip


@dataclass
class _Stage:
    """One submitted job's outcome: each task's terminal event, and the slot time its
    attempts spent in their handler (RUNNING to the attempt's end)."""

    final: dict[str, TaskEvent] = field(default_factory=dict)
    busy_s: float = 0.0
    throttled_s: list[float] = field(default_factory=list)
    """Per task held THROTTLED by the cluster-wide limiter: how long until it was dispatched."""


async def _stage(client: AsyncClient, tasks: list[Task], name: str) -> _Stage:
    job = await client.submit(tasks, name=name)
    out = _Stage()
    running: dict[str, float] = {}
    throttled: dict[str, float] = {}
    async for ev in job.events():
        if ev.state == "THROTTLED":
            throttled.setdefault(ev.task_id, ev.time)
        elif ev.state == "DISPATCHED" and ev.task_id in throttled:
            out.throttled_s.append(max(0.0, ev.time - throttled.pop(ev.task_id)))
        if ev.state in ("DISPATCHED", "RUNNING"):
            running[ev.task_id] = ev.time  # RUNNING (the handler started) replaces DISPATCHED
        elif ev.task_id in running:
            out.busy_s += max(0.0, ev.time - running.pop(ev.task_id))
        if ev.terminal:
            out.final[ev.task_id] = ev
    return out


def _tool_outcome(rec: JobRecord, ev: TaskEvent | None) -> None:
    rec.cacheable += 1
    if ev is None:
        rec.tool_errors += 1
    elif ev.state == "SUCCEEDED":
        if ev.cache_layer:
            rec.cache_hits += 1
        else:
            rec.calls += 1
    elif "422" in ev.error:
        rec.no_content += 1
    else:
        rec.tool_errors += 1


async def _ours_job(client: AsyncClient, job: Job, rec: JobRecord, throttled: list[float]) -> None:
    """The job as DeerFlow's graph would drive the SDK: the lead's calls, then every step's
    turns (each turn one submit: the llm call, then its tools), the steps at once, then the
    reporter. A failed tool goes back to the model as text, as in DeerFlow."""
    lead = await _stage(
        client,
        [_task("coordinator", job.coordinator, []), _task("planner", job.planner, ["coordinator"])],
        f"{job.id}/lead",
    )
    rec.busy_s += lead.busy_s
    throttled += lead.throttled_s
    if any(ev.state != "SUCCEEDED" for ev in lead.final.values()) or len(lead.final) < 2:
        rec.failed = True
        return
    rec.calls += 2

    async def step(s: int) -> None:
        for t, turn in enumerate(job.steps[s].turns):
            tasks = [_task("llm", turn.llm, [])]
            tasks += [_task(f"tool{k}", c, ["llm"]) for k, c in enumerate(turn.tools)]
            out = await _stage(client, tasks, f"{job.id}/s{s}t{t}")
            rec.busy_s += out.busy_s
            throttled.extend(out.throttled_s)
            llm = out.final.get("llm")
            if llm is None or llm.state != "SUCCEEDED":
                rec.failed_steps += 1
                return
            rec.calls += 1
            for k in range(len(turn.tools)):
                _tool_outcome(rec, out.final.get(f"tool{k}"))

    await asyncio.gather(*(step(s) for s in range(len(job.steps))))
    tail = await _stage(client, [_task("reporter", job.reporter, [])], f"{job.id}/report")
    rec.busy_s += tail.busy_s
    throttled += tail.throttled_s
    if tail.final.get("reporter") is None or tail.final["reporter"].state != "SUCCEEDED":
        rec.failed = True
    else:
        rec.calls += 1


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


async def run_ours(
    jobs: list[Job], providers: Providers, agents: int, slots: int, deadline_s: float
) -> SystemRun:
    sim = await SimulatorProcess.start(providers.sim_args())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            limits = Path(tmp) / "limits.toml"
            limits.write_text(providers.limits_toml())
            env = {}
            for name, key in KEYS.items():
                env[f"DEERFLOW_{name.upper()}_BASE_URL"] = sim.url
                env[f"DEERFLOW_{name.upper()}_API_KEY"] = key
            cluster = Cluster(
                agents,
                agent_args=["--slots", str(slots)],
                controller_args=["--limits", str(limits)],
                agent_env=env,
            )
            async with cluster, AsyncClient(cluster.address, timeout_s=60) as client:
                await client.agents(wait_for=agents, timeout_s=30)
                assert cluster.controller is not None
                pids = [cluster.controller.pid, *(a.pid for a in cluster.agents)]
                # The client side (this process) is DeerFlow's server driving the SDK: its CPU
                # counts, as the baselines' processes count theirs.
                cpu_before = _cpu_s(pids) + time.process_time()
                t0 = time.time() + 0.2
                records = [JobRecord(j.id, t0 + j.arrival_s) for j in jobs]
                deadline = t0 + deadline_s
                throttled: list[float] = []

                async def one(job: Job, rec: JobRecord) -> None:
                    await asyncio.sleep(max(0.0, rec.arrival - time.time()))
                    try:
                        await asyncio.wait_for(
                            _ours_job(client, job, rec, throttled), deadline - time.time()
                        )
                    except TimeoutError:
                        rec.failed = True
                    rec.end = time.time()

                await asyncio.gather(*(one(j, r) for j, r in zip(jobs, records, strict=True)))
                cpu = _cpu_s(pids) + time.process_time() - cpu_before
                stats = await client.stats()
        provider = await _sim_stats(sim.url)
    finally:
        await sim.stop()
    end = max((r.end for r in records), default=t0)
    return SystemRun(
        "ours", records, t0, agents * slots * (end - t0), agents * slots, cpu, provider,
        {
            "controller_retries": stats.retries,
            "slots_per_agent": slots,
            "throttled_tasks": len(throttled),
            "throttled_wait_mean_s": round(sum(throttled) / len(throttled), 3) if throttled else 0,
        },
    )  # fmt: skip
