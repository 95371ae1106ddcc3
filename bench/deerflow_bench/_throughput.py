"""Benchmarks (`deerflow bench ...`): real controller and agent processes on loopback, the client
in this process, one JSON object out.

Every benchmark prints at least: workload, tasks, seconds (makespan from the start of the submit
to the last result at the client), tasks_per_s, ideal_s, ratio_to_ideal (seconds / ideal_s) and
controller_rss_mb (peak resident memory of the controller process, sampled). Later benchmarks
keep this shape and add their own fields.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import time
from typing import Any

import psutil

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster

NOOP_TARGET_PER_S = 5000.0
"""The no-op target (issue #2): its ideal is tasks / 5,000 per s, so ratio <= 1 meets it."""


class RssSampler:
    """Samples a process's RSS every ``period_s`` and keeps the peak."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        self.proc = psutil.Process(pid)
        self.period_s = period_s
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.period_s)

    def current(self) -> int:
        try:
            return int(self.proc.memory_info().rss)
        except psutil.Error:
            return 0

    def sample(self) -> None:
        self.peak = max(self.peak, self.current())

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
        self.sample()
        return self.peak / (1 << 20)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


async def _run(
    workload: str,
    tasks: list[Task],
    *,
    agents: int,
    slots: int,
    ideal_s: float,
    prefetch: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    async with Cluster(
        agents,
        agent_args=["--slots", str(slots)],
        controller_args=["--prefetch", str(prefetch)],
    ) as cluster:
        assert cluster.controller is not None
        rss = RssSampler(cluster.controller.pid)
        rss.start()
        async with AsyncClient(cluster.address, timeout_s=60) as client:
            await client.agents(wait_for=agents, timeout_s=30)
            baseline_rss = rss.current()
            started = time.perf_counter()
            job = await client.submit(tasks, name=f"bench-{workload}")
            submitted = time.perf_counter()
            ok = failed = 0
            async for result in job.results():
                if result.ok:
                    ok += 1
                else:
                    failed += 1
            seconds = time.perf_counter() - started
            stats = await client.stats()
        controller_rss_mb = await rss.stop()
    return {
        "workload": workload,
        "tasks": len(tasks),
        "seconds": round(seconds, 4),
        "tasks_per_s": round(len(tasks) / seconds, 1),
        "ideal_s": round(ideal_s, 4),
        "ratio_to_ideal": round(seconds / ideal_s, 4) if ideal_s else None,
        "controller_rss_mb": round(controller_rss_mb, 1),
        # Peak growth over the idle controller, per task: what a task costs while the job is
        # held (spec, state, events) until its retention ends.
        "controller_bytes_per_task": round(
            (controller_rss_mb * (1 << 20) - baseline_rss) / len(tasks)
        ),
        "succeeded": ok,
        "failed": failed,
        "retries": stats.retries,
        "mean_assignment_batch": round(
            stats.assignments_sent / max(1, stats.assignment_messages), 1
        ),
        "submit_s": round(submitted - started, 4),
        "agents": agents,
        "slots": slots,
        "prefetch": prefetch,
        "machine": machine(),
        **extra,
    }


async def noop(tasks: int, agents: int, slots: int, prefetch: int) -> dict[str, Any]:
    """Echo tasks with 8-byte payloads: the cost of the control plane itself."""
    work = [Task(f"t{i}", "echo", f"{i:08d}".encode()) for i in range(tasks)]
    return await _run(
        "noop",
        work,
        agents=agents,
        slots=slots,
        ideal_s=tasks / NOOP_TARGET_PER_S,
        prefetch=prefetch,
        extra={"ideal_basis": f"tasks / {NOOP_TARGET_PER_S:g} per s (the target rate)"},
    )


async def io(
    tasks: int, agents: int, slots: int, prefetch: int, median_s: float, sigma: float, seed: int
) -> dict[str, Any]:
    """Sleep tasks with log-normal durations: how close dispatch gets to perfect packing."""
    rng = random.Random(seed)
    durations = [round(rng.lognormvariate(0, sigma) * median_s, 4) for _ in range(tasks)]
    work = [Task(f"t{i}", "sleep", {"seconds": d}) for i, d in enumerate(durations)]
    total_slots = agents * slots
    ideal = max(sum(durations) / total_slots, max(durations))
    return await _run(
        "io",
        work,
        agents=agents,
        slots=slots,
        ideal_s=ideal,
        prefetch=prefetch,
        extra={
            "ideal_basis": "max(sum of durations / slots, longest task)",
            "median_s": median_s,
            "sigma": sigma,
            "seed": seed,
        },
    )
