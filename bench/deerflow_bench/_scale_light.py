"""Many connected agents against few (issue #19, item 4): ``deerflow bench scale``'s
``light_agents`` section. Target: no-op throughput with ``many`` (200) agents no more than 20 %
below that with ``few`` (2).

Each run is a fresh controller (its defaults) and ``processes`` light-agent processes
(:mod:`._light_agents`: real agent streams, many per process) holding ``agents`` agents
between them, in one of two shapes:

- ``same-agents`` (the default): every agent of both configurations has ``slots`` slots (64, as
  ``bench noop``'s agents), so only how many are connected changes: what the controller spends
  per connected agent (its stream, heartbeats, placement among more agents).
- ``same-total``: the few share the many's total slots (``many x slots``: 2 x 400 against
  200 x 4), the same concurrency. Each agent then holds a hundredth of the tasks, so its result
  and assignment messages carry a hundredth as many (7 against 700): this measures the cost of
  small messages as much as that of agents (2 agents of 4 slots each cost more per task than
  200 of 4, docs/BENCHMARKS.md).

Per run: the time until every agent is connected; the controller's CPU over ``idle_s`` seconds
with the agents idle (heartbeats only); then one job of ``tasks`` echo tasks through the async
SDK, submit to last result (as ``bench noop``). From the agents' connection on, a second client
polls ``GetStats`` and ``ListAgents`` every ``poll_s`` (idle and running apart): their round
trips, the agents listed, and the oldest age of an agent's last sign of life at the controller
(heartbeat or report, every second by default; an agent silent for 15 s is declared dead).
The controller's CPU seconds and peak RSS during the job, and the CPU of the light processes
and of this client (they share the machine's cores with it). Runs alternate which
configuration goes first in each of ``rounds`` rounds; the ratio is of the median rates, and
``cpu_ratio`` of the median controller CPU per task (few's over many's): what the rate ratio
would be with the controller the only limit, steadier than the rates on a shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from deerflow_controller.client import AsyncClient, Task

from ._launcher import ControllerProcess
from ._light_agents import LightAgentsProcess
from ._throughput import RssSampler

__all__ = ["TARGET_RATIO", "light_agents"]

TARGET_RATIO = 0.8
"""Issue #19 item 4: throughput with 200 agents at least 80 % of that with 2."""


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def _cpu_s(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


@dataclass
class _Samples:
    stats_s: list[float] = field(default_factory=list)
    agents_s: list[float] = field(default_factory=list)
    fewest_agents: int | None = None
    oldest_sign_of_life_s: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "polls": len(self.stats_s),
            "get_stats_ms": {"p50": _ms(self.stats_s, 0.5), "p99": _ms(self.stats_s, 0.99)},
            "list_agents_ms": {"p50": _ms(self.agents_s, 0.5), "p99": _ms(self.agents_s, 0.99)},
            "fewest_agents_listed": self.fewest_agents,
            "oldest_sign_of_life_s": round(self.oldest_sign_of_life_s, 3),
        }


class _Watch:
    """A second client polling ``GetStats`` then ``ListAgents`` every ``poll_s``, its samples
    kept per phase (``phase`` is switched by the run: idle, then running)."""

    def __init__(self) -> None:
        self.phases: dict[str, _Samples] = {}
        self.phase = "idle"

    async def run(self, client: AsyncClient, poll_s: float) -> None:
        while True:
            t0 = time.perf_counter()
            await client.stats()
            t1 = time.perf_counter()
            listed = await client.agents()
            t2 = time.perf_counter()
            now = time.time()  # the controller stamps last_heartbeat with its wall clock
            seen = self.phases.setdefault(self.phase, _Samples())
            seen.stats_s.append(t1 - t0)
            seen.agents_s.append(t2 - t1)
            n = len(listed)
            seen.fewest_agents = n if seen.fewest_agents is None else min(seen.fewest_agents, n)
            ages = [now - a.last_heartbeat for a in listed if a.last_heartbeat]
            if ages:
                seen.oldest_sign_of_life_s = max(seen.oldest_sign_of_life_s, max(ages))
            await asyncio.sleep(poll_s)

    def report(self, phase: str) -> dict[str, Any]:
        return self.phases.get(phase, _Samples()).report()


DEFAULT_SLOTS = {"same-agents": 64, "same-total": 4}
"""Slots of each of the many agents when none are given, by shape."""


def agent_shapes(shape: str, many: int, few: int, slots: int | None) -> dict[int, int]:
    """Slots per agent of each configuration (``{agents: slots}``) in ``shape``."""
    if shape not in DEFAULT_SLOTS:
        raise ValueError(f"the shape is same-agents or same-total, not {shape[:40]!r}")
    per_agent = DEFAULT_SLOTS[shape] if slots is None else slots
    if shape == "same-agents":
        return {few: per_agent, many: per_agent}
    return {few: -(-many * per_agent // few), many: per_agent}


def _split(total: int, parts: int) -> list[int]:
    """``total`` agents over at most ``parts`` processes, as evenly as can be."""
    parts = min(parts, total)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _one_run(
    agents: int,
    slots: int,
    *,
    processes: int,
    tasks: int,
    idle_s: float,
    poll_s: float,
    controller_args: list[str],
) -> dict[str, Any]:
    """One controller and its light agents; every process stopped on return."""
    controller = await ControllerProcess.start(controller_args)
    lights: list[LightAgentsProcess] = []
    try:
        started = time.perf_counter()
        first = 1
        for count in _split(agents, processes):
            lights.append(
                await LightAgentsProcess.start(controller.address, count, first=first, slots=slots)
            )
            first += count
        ctl = psutil.Process(controller.pid)
        light_procs = [psutil.Process(p.pid) for p in lights]
        async with (
            AsyncClient(controller.address, timeout_s=120) as client,
            AsyncClient(controller.address, timeout_s=120) as watcher,
        ):
            await client.agents(wait_for=agents, timeout_s=120)
            connected_s = time.perf_counter() - started
            watch = _Watch()
            poller = asyncio.create_task(watch.run(watcher, poll_s))
            c0 = _cpu_s(ctl)
            await asyncio.sleep(idle_s)
            idle_cpu = (_cpu_s(ctl) - c0) / idle_s if idle_s else None
            work = [Task(f"t{i}", "echo", f"{i:08d}".encode()) for i in range(tasks)]
            rss = RssSampler(controller.pid)
            rss.start()
            watch.phase = "running"
            me = psutil.Process()
            c0, l0, m0 = _cpu_s(ctl), sum(_cpu_s(p) for p in light_procs), _cpu_s(me)
            t0 = time.perf_counter()
            job = await client.submit(work, name=f"light-{agents}")
            ok = failed = 0
            async for result in job.results():
                if result.ok:
                    ok += 1
                else:
                    failed += 1
            seconds = time.perf_counter() - t0
            ctl_cpu = _cpu_s(ctl) - c0
            light_cpu = sum(_cpu_s(p) for p in light_procs) - l0
            client_cpu = _cpu_s(me) - m0
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            peak_rss_mb = await rss.stop()
            stats = await client.stats()
            at_end = len(await client.agents())
    finally:
        await asyncio.gather(*(p.stop() for p in lights), return_exceptions=True)
        await controller.stop()
    return {
        "agents": agents,
        "slots_per_agent": slots,
        "light_processes": len(lights),
        "connected_s": round(connected_s, 3),
        "controller_cpu_percent_idle": None if idle_cpu is None else round(100 * idle_cpu, 1),
        "tasks": tasks,
        "seconds": round(seconds, 4),
        "tasks_per_s": round(tasks / seconds, 1),
        "succeeded": ok,
        "failed": failed,
        "retries": stats.retries,
        "heartbeat_timeouts": stats.heartbeat_timeouts,
        "assignment_messages": stats.assignment_messages,
        "mean_assignment_batch": round(
            stats.assignments_sent / max(1, stats.assignment_messages), 1
        ),
        "controller_cpu_s": round(ctl_cpu, 3),
        "controller_cpu_us_per_task": round(1e6 * ctl_cpu / tasks, 1),
        "controller_cpu_share": round(ctl_cpu / seconds, 3),
        "light_processes_cpu_s": round(light_cpu, 3),
        "client_cpu_s": round(client_cpu, 3),
        "controller_rss_mb": round(peak_rss_mb, 1),
        "agents_connected_at_end": at_end,
        "while_idle": watch.report("idle"),
        "while_running": watch.report("running"),
    }


async def light_agents(
    *,
    many: int = 200,
    few: int = 2,
    shape: str = "same-agents",
    slots: int | None = None,
    tasks: int = 50_000,
    rounds: int = 3,
    processes: int = 2,
    idle_s: float = 5.0,
    poll_s: float = 0.1,
    prefetch: int | None = None,
) -> dict[str, Any]:
    """``rounds`` x 2 runs (see the module's docstring), one after another; blocks for all of
    them. ``slots`` is per agent of the ``many`` configuration (None: :data:`DEFAULT_SLOTS` of
    the shape); ``few`` agents have as many (``same-agents``) or share the same total, rounded up
    (``same-total``). ``prefetch``: the controllers' ``--prefetch`` (None: their default)."""
    shapes = agent_shapes(shape, many, few, slots)
    controller_args = [] if prefetch is None else ["--prefetch", str(prefetch)]
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = [few, many] if r % 2 == 0 else [many, few]
        for n in order:
            out = await _one_run(
                n,
                shapes[n],
                processes=processes,
                tasks=tasks,
                idle_s=idle_s,
                poll_s=poll_s,
                controller_args=controller_args,
            )
            runs.append({"round": r + 1, **out})
    median = {
        n: statistics.median(x["tasks_per_s"] for x in runs if x["agents"] == n)
        for n in (few, many)
    }
    per_round = [
        round(m["tasks_per_s"] / f["tasks_per_s"], 3)
        for r in range(1, rounds + 1)
        for f in runs
        if f["round"] == r and f["agents"] == few
        for m in runs
        if m["round"] == r and m["agents"] == many
    ]
    cpu = {
        n: statistics.median(x["controller_cpu_us_per_task"] for x in runs if x["agents"] == n)
        for n in (few, many)
    }
    ratio = median[many] / median[few]
    return {
        "few": few,
        "many": many,
        "shape": shape,
        "slots_total": {str(n): n * s for n, s in shapes.items()},
        "slots_per_agent": {str(n): s for n, s in shapes.items()},
        "tasks": tasks,
        "rounds": rounds,
        "light_processes": processes,
        "controller_args": controller_args,
        "runs": runs,
        "median_tasks_per_s": {str(n): round(v, 1) for n, v in median.items()},
        "ratio_per_round": per_round,
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        # On a shared machine the rates swing with the neighbours' load; the controller's own
        # CPU per task does not. Its ratio is the rate ratio of a controller with a core to
        # itself (the few's cost over the many's).
        "median_controller_cpu_us_per_task": {str(n): round(v, 1) for n, v in cpu.items()},
        "cpu_ratio": round(cpu[few] / cpu[many], 3),
        "meets_target_by_cpu": cpu[few] / cpu[many] >= TARGET_RATIO,
        "every_task_succeeded": all(x["succeeded"] == tasks for x in runs),
        "every_agent_connected_at_end": all(
            x["agents_connected_at_end"] == x["agents"] for x in runs
        ),
    }
