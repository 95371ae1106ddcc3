"""Tasks in flight at once on a real controller (issue #19, item 4): ``deerflow bench scale``'s
``in_flight`` section.

A controller and ``agents`` agent processes of ``slots`` slots each; ``agents x slots`` sleep
tasks of ``sleep_s`` seconds are submitted in jobs of ``job_size`` (the admission limits raised
by flag to the total, as the JSON's ``controller_args`` says). The client polls ``GetStats``
every ``poll_s``: how long until every task was held by an agent (``tasks_by_state``'s
``IN_FLIGHT``: dispatched or running; the controller keeps no separate running count); then,
for ``hold_s`` seconds with all of them held, whether every agent stays connected (an agent
whose heartbeats ran late for ``agent_silence_s``, 15 s, would be declared dead and its attempts
retried) and how long each ``GetStats`` took to answer (the
controller's loop responsiveness under that load). The jobs are cancelled at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from deerflow_controller.client import AsyncClient, JobHandle, Task

from ._launcher import Cluster
from ._throughput import RssSampler

__all__ = ["in_flight"]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def in_flight(
    agents: int,
    slots: int,
    *,
    sleep_s: float = 600.0,
    hold_s: float = 30.0,
    job_size: int = 10_000,
    poll_s: float = 0.5,
    ready_timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Blocks for the ramp (at most ``ready_timeout_s``) plus ``hold_s``; every process it
    starts is stopped on return."""
    tasks = agents * slots
    n_jobs = -(-tasks // job_size)
    controller_args = [
        "--max-queued-tasks",
        str(tasks),
        "--max-queued-tasks-per-tenant",
        str(tasks),
    ]
    async with Cluster(
        agents, agent_args=["--slots", str(slots)], controller_args=controller_args
    ) as cluster:
        assert cluster.controller is not None
        rss = RssSampler(cluster.controller.pid)
        rss.start()
        async with AsyncClient(cluster.address, timeout_s=120) as client:
            await client.agents(wait_for=agents, timeout_s=120)
            started = time.perf_counter()
            jobs: list[JobHandle] = []
            left = tasks
            for j in range(n_jobs):
                size = min(job_size, left)
                work = [Task(f"t{i}", "sleep", {"seconds": sleep_s}) for i in range(size)]
                jobs.append(await client.submit(work, name=f"inflight-{j}"))
                left -= size
            submit_s = time.perf_counter() - started
            all_assigned_s = None
            most_in_flight = 0
            latencies: list[float] = []
            fewest_agents = agents
            hold_until = None
            while True:
                t0 = time.perf_counter()
                stats = await client.stats()
                now = time.perf_counter()
                latencies.append(now - t0)
                assigned = stats.tasks_by_state.get("IN_FLIGHT", 0)
                most_in_flight = max(most_in_flight, assigned)
                if all_assigned_s is None and assigned >= tasks:
                    all_assigned_s = now - started
                if hold_until is None and (assigned >= tasks or now - started > ready_timeout_s):
                    hold_until = now + hold_s
                    latencies.clear()
                if hold_until is not None:
                    fewest_agents = min(fewest_agents, stats.agents)
                    if now >= hold_until:
                        break
                await asyncio.sleep(poll_s)
            retries = stats.retries
            for job in jobs:
                await job.cancel(reason="bench scale in_flight done")
        controller_rss_mb = await rss.stop()
    return {
        "agents": agents,
        "slots": slots,
        "tasks": tasks,
        "sleep_s": sleep_s,
        "submit_s": round(submit_s, 3),
        "all_assigned_s": None if all_assigned_s is None else round(all_assigned_s, 3),
        "most_in_flight": most_in_flight,
        "hold_s": hold_s,
        "fewest_agents_connected_while_held": fewest_agents,
        "retries_while_held": retries,
        "stats_latency_ms_while_held": {
            "p50": _pct(latencies, 0.5),
            "p99": _pct(latencies, 0.99),
            "max": round(max(latencies) * 1000, 2),
            "mean": round(statistics.fmean(latencies) * 1000, 2),
            "samples": len(latencies),
        },
        "controller_rss_mb": round(controller_rss_mb, 1),
        "controller_args": controller_args,
    }
