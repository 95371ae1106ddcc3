"""The three systems of ``deerflow bench research``, each run on the same jobs against a fresh
simulator: the fork and DeerFlow 2.0 as N side-by-side server processes
(``_baseline_process``), and the control plane (a controller and N agents) through the SDK.

Each run returns a :class:`SystemRun`: every job's record, the slot time the system made
available, the CPU seconds of all its processes, and what the simulator saw.
"""

from __future__ import annotations

import asyncio
import json
import statistics
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
REPORTER_PROGRESS = 9
"""The reporter's priority with ``progress_priority``: above any turn (a step has 2-3)."""
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


def _task(task_id: str, call: Call, deps: list[str], priority: int = 0) -> Task:
    if call.kind == "llm":
        return Task(
            task_id, "llm", call.payload, depends_on=deps, rate_keys=(RATE_KEYS["llm"],),
            est_tokens=len(json.dumps(call.payload)) / 4 + 300, timeout_s=120,
            priority=priority,
        )  # fmt: skip
    return Task(task_id, call.kind, call.payload, depends_on=deps,
                rate_keys=(RATE_KEYS[call.kind],), timeout_s=60, priority=priority)  # fmt: skip


@dataclass
class _Stage:
    """One submitted job (a stage of a research job): its tasks, its terminal events (all the
    driver reads while it runs, as the drop-ins do), and when the client called submit, got
    the reply and received the last result."""

    rec: JobRecord
    step: int
    """The plan step it belongs to (-1: the lead's calls or the reporter)."""
    job_id: str
    tasks: list[Task]
    called: float
    submitted: float
    final: dict[str, TaskEvent] = field(default_factory=dict)
    received: float = 0.0
    critical_s: float = 0.0
    """Handler time along its longest dependency chain (set by :func:`_replay`)."""


@dataclass
class Overheads:
    """Where a stage's (one submit's) wall time goes beyond its critical path's handler time,
    summed over every stage: the per-phase numbers of ``deerflow bench research``."""

    stages: int = 0
    wall_s: float = 0.0
    """Submit called to the last terminal event received by the client."""
    critical_run_s: float = 0.0
    """The stage's longest dependency chain of handler time (RUNNING to the attempt's end)."""
    submit_s: float = 0.0
    """The submit RPC."""
    to_running_s: float = 0.0
    """On the critical chain: from the task's first event (or its dependency's end) to
    RUNNING, over all attempts (queue, THROTTLED, retry waits, dispatch to the agent)."""
    throttled_s: float = 0.0
    """Part of ``to_running_s`` spent THROTTLED."""
    retry_wait_s: float = 0.0
    """Part of ``to_running_s`` after RETRYING (the backoff and its requeue)."""
    failed_run_s: float = 0.0
    """Handler time of the critical chain's failed attempts (a 5xx answered, retried)."""
    delivery_s: float = 0.0
    """The stage's last terminal event: recorded by the controller to received by the client."""

    def to_json(self) -> dict[str, float]:
        n = max(1, self.stages)
        out = {"stages": float(self.stages)}
        for name in ("wall_s", "critical_run_s", "submit_s", "to_running_s", "throttled_s",
                     "retry_wait_s", "failed_run_s", "delivery_s"):  # fmt: skip
            out[f"{name[:-2]}_mean_ms"] = round(1000 * getattr(self, name) / n, 1)
        return out


@dataclass
class _Timeline:
    """One task's events, in the controller's clock (the same host's wall clock)."""

    first: float = 0.0
    running: float = 0.0
    run_s: float = 0.0
    """The last attempt's handler time."""
    failed_run_s: float = 0.0
    throttled_s: float = 0.0
    retry_wait_s: float = 0.0
    to_running_s: float = 0.0
    end: float = 0.0
    _since: float = 0.0
    _throttled_at: float = 0.0
    _retry_at: float = 0.0

    def see(self, ev: TaskEvent) -> None:
        t = ev.time
        if not self.first:
            self.first = self._since = t
        if ev.state == "THROTTLED" and not self._throttled_at:
            self._throttled_at = t
        elif ev.state in ("QUEUED", "DISPATCHED", "RUNNING") and self._throttled_at:
            self.throttled_s += t - self._throttled_at  # released by the limiter
            self._throttled_at = 0.0
        if ev.state == "RUNNING":
            self.running = t
            self.to_running_s += max(0.0, t - self._since)
            if self._retry_at:
                self.retry_wait_s += max(0.0, t - self._retry_at)
                self._retry_at = 0.0
        elif ev.state == "RETRYING":
            if self.running:
                self.failed_run_s += max(0.0, t - self.running)
                self.running = 0.0
            self._since = self._retry_at = t
        elif ev.terminal:
            self.end = t
            if self.running and not ev.cache_layer:
                self.run_s = max(0.0, t - self.running)


async def _stage(client: AsyncClient, tasks: list[Task], name: str, rec: JobRecord,
                 stages: list[_Stage], step: int = -1) -> _Stage:  # fmt: skip
    """Submit one stage and wait for its results. Only terminal events are streamed, as
    DeerFlow's drop-ins wait for a task (``JobHandle.result``); the timeline of each task
    (busy and throttled time, the per-phase overheads) is read from the controller's log after
    the run (:func:`_replay`), outside the measured CPU time."""
    called = time.time()
    job = await client.submit(tasks, name=name)
    out = _Stage(rec, step, job.job_id, tasks, called, time.time())
    async for ev in client.events(job.job_id, terminal_only=True):
        if ev.terminal:
            out.final[ev.task_id] = ev
    out.received = time.time()
    stages.append(out)
    return out


async def _replay(
    client: AsyncClient, stage: _Stage, throttled: list[float], o: Overheads,
    busy: list[tuple[float, float]],
) -> None:  # fmt: skip
    """Read one finished stage's whole event log: add its busy slot time (DISPATCHED or
    RUNNING to the attempt's end) to its job's record and each such interval to ``busy``,
    each THROTTLED wait to ``throttled``, and its overheads to ``o``."""
    running: dict[str, float] = {}
    held: dict[str, float] = {}
    lines: dict[str, _Timeline] = defaultdict(_Timeline)
    last_end = 0.0
    async for ev in client.events(stage.job_id):
        lines[ev.task_id].see(ev)
        if ev.state == "THROTTLED":
            held.setdefault(ev.task_id, ev.time)
        elif ev.state == "DISPATCHED" and ev.task_id in held:
            throttled.append(max(0.0, ev.time - held.pop(ev.task_id)))
        if ev.state in ("DISPATCHED", "RUNNING"):
            running[ev.task_id] = ev.time  # RUNNING (the handler started) replaces DISPATCHED
        elif ev.task_id in running:
            since = running.pop(ev.task_id)
            stage.rec.busy_s += max(0.0, ev.time - since)
            busy.append((since, ev.time))
        if ev.terminal:
            last_end = max(last_end, ev.time)
    _account(o, stage, lines, last_end)


def _account(o: Overheads, stage: _Stage, lines: dict[str, _Timeline], last_end: float) -> None:
    """Add one stage to ``o``: its wall time and, along its critical chain (the dependency
    chain that ended last), where the time beyond the handlers' went."""
    tasks = stage.tasks
    by_id = {t.id: t for t in tasks}
    chain: list[_Timeline] = []
    task = max(tasks, key=lambda t: lines[t.id].end)
    while True:
        line = lines[task.id]
        chain.append(line)
        if not task.depends_on:
            break
        task = by_id[max(task.depends_on, key=lambda d: lines[d].end)]
    stage.critical_s = sum(line.run_s for line in chain)
    o.stages += 1
    o.wall_s += stage.received - stage.called
    o.submit_s += stage.submitted - stage.called
    o.delivery_s += max(0.0, stage.received - last_end)
    prev_end = 0.0
    for line in reversed(chain):  # root first
        o.critical_run_s += line.run_s
        o.failed_run_s += line.failed_run_s
        o.throttled_s += line.throttled_s
        o.retry_wait_s += line.retry_wait_s
        # A dependent task's first event comes when it is submitted; it can only start when
        # its dependency ended: count from then.
        start = max(line.first, prev_end)
        o.to_running_s += line.to_running_s - max(0.0, start - line.first)
        prev_end = line.end


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


async def _ours_job(
    client: AsyncClient, job: Job, rec: JobRecord, stages: list[_Stage], progress_priority: bool
) -> None:
    """The job as DeerFlow's graph would drive the SDK: the lead's calls, then every step's
    turns (each turn one submit: the llm call, then its tools), the steps at once, then the
    reporter. A failed tool goes back to the model as text, as in DeerFlow.

    With ``progress_priority`` each task's priority is how far its job has got (the lead 0,
    turn t of a step 1 + t, the reporter ``REPORTER_PROGRESS``): where a shared key or the
    slots are short, research already under way finishes before new research starts, as the
    SDK's priorities allow (the limiter serves a key's waiting tasks by priority, then age)."""

    def prio(level: int) -> int:
        return level if progress_priority else 0

    lead = await _stage(
        client,
        [_task("coordinator", job.coordinator, []), _task("planner", job.planner, ["coordinator"])],
        f"{job.id}/lead",
        rec,
        stages,
    )
    if any(ev.state != "SUCCEEDED" for ev in lead.final.values()) or len(lead.final) < 2:
        rec.failed = True
        return
    rec.calls += 2

    async def step(s: int) -> None:
        for t, turn in enumerate(job.steps[s].turns):
            tasks = [_task("llm", turn.llm, [], prio(1 + t))]
            tasks += [_task(f"tool{k}", c, ["llm"], prio(1 + t)) for k, c in enumerate(turn.tools)]
            out = await _stage(client, tasks, f"{job.id}/s{s}t{t}", rec, stages, s)
            llm = out.final.get("llm")
            if llm is None or llm.state != "SUCCEEDED":
                rec.failed_steps += 1
                return
            rec.calls += 1
            for k in range(len(turn.tools)):
                _tool_outcome(rec, out.final.get(f"tool{k}"))

    await asyncio.gather(*(step(s) for s in range(len(job.steps))))
    tail = await _stage(
        client, [_task("reporter", job.reporter, [], prio(REPORTER_PROGRESS))], f"{job.id}/report",
        rec, stages,
    )  # fmt: skip
    if tail.final.get("reporter") is None or tail.final["reporter"].state != "SUCCEEDED":
        rec.failed = True
    else:
        rec.calls += 1


def _critical_paths(stages: list[_Stage]) -> list[float]:
    """Per job that got a report: its handler time along its dependency chain (the lead's
    calls, its slowest step's turns, the reporter), the least any executor could take with
    the providers answering as they did."""
    lead: dict[str, float] = defaultdict(float)
    steps: dict[tuple[str, int], float] = defaultdict(float)
    recs: dict[str, JobRecord] = {}
    for st in stages:
        recs[st.rec.id] = st.rec
        if st.step < 0:
            lead[st.rec.id] += st.critical_s
        else:
            steps[(st.rec.id, st.step)] += st.critical_s
    slowest: dict[str, float] = defaultdict(float)
    for (job, _), s in steps.items():
        slowest[job] = max(slowest[job], s)
    return [lead[j] + slowest[j] for j, r in recs.items() if not r.failed]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _peak(intervals: list[tuple[float, float]]) -> int:
    """Most intervals overlapping at once (an end before a start at the same instant)."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


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
    jobs: list[Job], providers: Providers, agents: int, slots: int, deadline_s: float,
    progress_priority: bool = True, tuner: tuple[str, float, str] = ("observe", 2.0, "throughput"),
    slot_limit: int = 0,
) -> SystemRun:  # fmt: skip
    """The control plane on ``agents`` agents of ``slots`` slots; ``tuner`` is the controller's
    ``--tuner`` mode, ``--tuner-interval-s`` and ``--tuner-objective``; ``slot_limit`` its
    ``--agent-slot-limit`` (0: the agents' own slots), where the tuner's slot knob starts."""
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
                controller_args=[
                    *("--limits", str(limits), "--tuner", tuner[0]),
                    *("--tuner-interval-s", str(tuner[1]), "--tuner-objective", tuner[2]),
                    *("--agent-slot-limit", str(slot_limit)),
                ],
                agent_env=env,
            )
            async with cluster, AsyncClient(cluster.address, timeout_s=60) as client:
                await client.agents(wait_for=agents, timeout_s=30)
                assert cluster.controller is not None
                pids = [cluster.controller.pid, *(a.pid for a in cluster.agents)]
                # The client side (this process) is DeerFlow's server driving the SDK: its CPU
                # counts, as the baselines' processes count theirs.
                cpu_before = [_cpu_s(pids[:1]), _cpu_s(pids[1:]), time.process_time()]
                t0 = time.time() + 0.2
                records = [JobRecord(j.id, t0 + j.arrival_s) for j in jobs]
                deadline = t0 + deadline_s
                stages: list[_Stage] = []

                async def one(job: Job, rec: JobRecord) -> None:
                    await asyncio.sleep(max(0.0, rec.arrival - time.time()))
                    try:
                        work = _ours_job(client, job, rec, stages, progress_priority)
                        await asyncio.wait_for(work, deadline - time.time())
                    except TimeoutError:
                        rec.failed = True
                    rec.end = time.time()

                await asyncio.gather(*(one(j, r) for j, r in zip(jobs, records, strict=True)))
                cpu_parts = [
                    _cpu_s(pids[:1]) - cpu_before[0],
                    _cpu_s(pids[1:]) - cpu_before[1],
                    time.process_time() - cpu_before[2],
                ]
                cpu = sum(cpu_parts)
                # The measurement's own reading, outside the CPU counted above.
                throttled: list[float] = []
                overheads = Overheads()
                intervals: list[tuple[float, float]] = []
                for stage in stages:
                    await _replay(client, stage, throttled, overheads, intervals)
                stats = await client.stats()
        provider = await _sim_stats(sim.url)
    finally:
        await sim.stop()
    end = max((r.end for r in records), default=t0)
    return SystemRun(
        "ours", records, t0, agents * slots * (end - t0), agents * slots, cpu, provider,
        {
            "controller_retries": stats.retries,
            "stage_overheads": overheads.to_json(),
            "rate_keys_waited": {k.key: f"{k.waited}/{k.admitted}" for k in stats.rate_keys},
            "cpu_s_controller": round(cpu_parts[0], 2),
            "cpu_s_agents": round(cpu_parts[1], 2),
            "cpu_s_client": round(cpu_parts[2], 2),
            "slots_per_agent": slots,
            "agent_slot_limit": slot_limit,
            "peak_busy_slots": _peak(intervals),
            "job_critical_path_p50_s": round(_median(_critical_paths(stages)), 3),
            "progress_priority": progress_priority,
            "throttled_tasks": len(throttled),
            "throttled_wait_mean_s": round(sum(throttled) / len(throttled), 3) if throttled else 0,
            "tuner_changes": [
                f"{c.knob} {c.old_value}->{c.new_value} {c.outcome}" for c in stats.tuning.history
            ],
            "tuner_history": [
                {
                    "at_s": round(c.at - t0, 1),
                    "judged_after_s": (
                        round(c.judged_at - c.at, 1) if c.outcome not in ("trying", "") else None
                    ),
                    "change": f"{c.knob} {c.old_value}->{c.new_value}",
                    "outcome": c.outcome,
                    "before": c.before_detail,
                    "after": c.after_detail,
                    "verdict": c.verdict,
                }
                for c in stats.tuning.history
            ],
            "tuner_final_knobs": {k.name: k.value for k in stats.tuning.knobs},
        },
    )  # fmt: skip
