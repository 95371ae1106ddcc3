"""Scheduling benchmarks (issue #4): ``deerflow bench skewed|dag|hetero|brownout --json``.

Each runs the real controller and agents (and the provider simulator for brown-out) and prints
the common JSON shape, with ``ratio_to_ideal`` against the bound the issue names:

- ``skewed``: heavy-tailed durations on 2 agents x 4 slots; bound max(total / slots, longest).
- ``dag``: research-shaped jobs (plans -> searches -> a crawl after each search -> a report per
  plan); bound: the critical path (the longest chain of planned durations).
- ``hetero``: two agents, one half as fast (``DEERFLOW_WORK_SPEED=0.5`` on its ``work``
  handler, standing in for slower hardware); bound max(total / capacity, longest), capacity
  being slots weighted by speed.
- ``brownout``: search tasks against the simulator while it answers 30 % of requests with 5xx
  for a window; reports the share that eventually succeeded and attempts per task.

Durations are the planned ones, carried in the payload (``work``: items x per-item seconds;
``sleep``: seconds), so the bound is exact. A warm-up job first lets the predictor learn
per-item cost and each agent's speed, as a long-running controller would have; its prediction
error on the measured job (held out) is reported as ``predictor_mdape``.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections import Counter
from typing import Any

import aiohttp

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster, SimulatorProcess
from ._throughput import machine

__all__ = ["brownout", "dag", "hetero", "skewed"]


def _work(task_id: str, items: int, per_item_s: float, **kw: Any) -> Task:
    return Task(
        task_id, "work", {"items": list(range(items)), "per_item_s": per_item_s}, split=False, **kw
    )


async def _makespan(client: AsyncClient, tasks: list[Task], name: str) -> dict[str, Any]:
    """Submit ``tasks`` as one job; follow its events to the last result. Returns the makespan
    (submit to the last result), per-task attempts, and the prediction error of every attempt
    that ran (predicted on DISPATCHED vs RUNNING to SUCCEEDED by the controller's clock)."""
    started = time.perf_counter()
    job = await client.submit(tasks, name=name)
    attempts: dict[str, int] = {}
    agents: Counter[str] = Counter()
    predicted: dict[str, float] = {}
    began: dict[str, float] = {}
    errors: list[float] = []
    ok = failed = 0
    async for ev in job.events():
        if ev.state == "DISPATCHED":
            predicted[ev.task_id] = ev.predicted_s
        elif ev.state == "RUNNING":
            began[ev.task_id] = ev.time
        elif ev.terminal:
            attempts[ev.task_id] = ev.attempt
            agents[ev.agent_id] += 1
            if ev.state == "SUCCEEDED":
                ok += 1
                run_s = ev.time - began.get(ev.task_id, ev.time)
                guess = predicted.get(ev.task_id, 0.0)
                if run_s > 0 and guess > 0:
                    errors.append(abs(guess - run_s) / run_s)
            else:
                failed += 1
            if len(attempts) == len(tasks):
                break
    return {
        "seconds": time.perf_counter() - started,
        "succeeded": ok,
        "failed": failed,
        "attempts": attempts,
        "tasks_by_agent": dict(sorted(agents.items())),
        "mdape": round(statistics.median(errors), 4) if errors else None,
    }


def _shape(
    workload: str, n: int, run: dict[str, Any], ideal: float, **extra: Any
) -> dict[str, Any]:
    seconds = float(run["seconds"])
    return {
        "workload": workload,
        "tasks": n,
        "seconds": round(seconds, 4),
        "tasks_per_s": round(n / seconds, 1),
        "ideal_s": round(ideal, 4),
        "ratio_to_ideal": round(seconds / ideal, 4),
        "succeeded": run["succeeded"],
        "failed": run["failed"],
        "machine": machine(),
        **extra,
    }


def _heavy_tailed_items(rng: random.Random, n: int, median: float, sigma: float) -> list[int]:
    return [max(1, min(2000, round(rng.lognormvariate(math.log(median), sigma)))) for _ in range(n)]


async def _warmed_makespan(
    client: AsyncClient,
    agents: int,
    work: list[Task],
    name: str,
    *,
    rng: random.Random,
    per_item_s: float,
    warmup: int,
) -> dict[str, Any]:
    """Wait for ``agents`` agents; run a job of ``warmup`` heavy-tailed tasks (not measured, so
    the predictor knows per-item cost and each agent's speed); then :func:`_makespan` of
    ``work``."""
    await client.agents(wait_for=agents, timeout_s=30)
    if warmup:
        items = _heavy_tailed_items(rng, warmup, 8, 1.0)
        warm = [_work(f"w{i}", k, per_item_s) for i, k in enumerate(items)]
        await _makespan(client, warm, "warm")
    return await _makespan(client, work, name)


async def skewed(
    tasks: int, agents: int, slots: int, per_item_s: float, sigma: float, seed: int, warmup: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    items = _heavy_tailed_items(rng, tasks, 10, sigma)
    durations = [k * per_item_s for k in items]
    ideal = max(sum(durations) / (agents * slots), max(durations))
    work = [_work(f"t{i}", k, per_item_s) for i, k in enumerate(items)]
    async with (
        Cluster(agents, agent_args=["--slots", str(slots)]) as cluster,
        AsyncClient(cluster.address, timeout_s=120) as client,
    ):
        run = await _warmed_makespan(
            client, agents, work, "bench-skewed", rng=rng, per_item_s=per_item_s, warmup=warmup
        )
    return _shape(
        "skewed",
        tasks,
        run,
        ideal,
        ideal_basis="max(sum of durations / slots, longest task)",
        total_work_s=round(sum(durations), 3),
        longest_s=round(max(durations), 3),
        agents=agents,
        slots=slots,
        sigma=sigma,
        seed=seed,
        warmup_tasks=warmup,
        predictor_mdape=run["mdape"],
    )


async def dag(plans: int, searches: int, agents: int, slots: int, seed: int) -> dict[str, Any]:
    """Per plan: plan -> ``searches`` searches -> one crawl after each search -> a report."""
    rng = random.Random(seed)

    def dur(median: float, sigma: float) -> float:
        return round(rng.lognormvariate(math.log(median), sigma), 3)

    tasks: list[Task] = []
    critical = 0.0
    for p in range(plans):
        plan_s, report_s = dur(0.4, 0.3), dur(0.6, 0.3)
        tasks.append(Task(f"p{p}", "sleep", {"seconds": plan_s}))
        chains = []
        crawl_ids = []
        for s in range(searches):
            search_s, crawl_s = dur(0.4, 0.5), dur(0.9, 0.6)
            tasks.append(Task(f"p{p}s{s}", "sleep", {"seconds": search_s}, depends_on=[f"p{p}"]))
            tasks.append(
                Task(f"p{p}s{s}c", "sleep", {"seconds": crawl_s}, depends_on=[f"p{p}s{s}"])
            )
            crawl_ids.append(f"p{p}s{s}c")
            chains.append(search_s + crawl_s)
        tasks.append(Task(f"p{p}r", "sleep", {"seconds": report_s}, depends_on=crawl_ids))
        critical = max(critical, plan_s + max(chains) + report_s)
    async with (
        Cluster(agents, agent_args=["--slots", str(slots)]) as cluster,
        AsyncClient(cluster.address, timeout_s=120) as client,
    ):
        await client.agents(wait_for=agents, timeout_s=30)
        run = await _makespan(client, tasks, "bench-dag")
    return _shape(
        "dag",
        len(tasks),
        run,
        critical,
        ideal_basis="critical path (plan + longest search->crawl chain + report)",
        plans=plans,
        searches_per_plan=searches,
        agents=agents,
        slots=slots,
        seed=seed,
    )


async def hetero(
    tasks: int, slots: int, per_item_s: float, sigma: float, seed: int, warmup: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    items = _heavy_tailed_items(rng, tasks, 10, sigma)
    durations = [k * per_item_s for k in items]
    speeds = (1.0, 0.5)
    capacity = slots * sum(speeds)
    ideal = max(sum(durations) / capacity, max(durations))
    work = [_work(f"t{i}", k, per_item_s) for i, k in enumerate(items)]
    cluster = Cluster(0, agent_args=["--slots", str(slots)])
    async with cluster, AsyncClient(cluster.address, timeout_s=120) as client:
        for i, speed in enumerate(speeds):
            speed_env = {"DEERFLOW_WORK_SPEED": str(speed)}
            await cluster.add_agent(f"agent-{i + 1}-speed-{speed:g}", env=speed_env)
        run = await _warmed_makespan(
            client, len(speeds), work, "bench-hetero", rng=rng, per_item_s=per_item_s, warmup=warmup
        )
    return _shape(
        "hetero",
        tasks,
        run,
        ideal,
        ideal_basis="max(sum of durations / (slots x speed summed over agents), longest task)",
        speeds=list(speeds),
        slots=slots,
        total_work_s=round(sum(durations), 3),
        seed=seed,
        warmup_tasks=warmup,
        predictor_mdape=run["mdape"],
        tasks_by_agent=run["tasks_by_agent"],
    )


async def brownout(
    tasks: int, agents: int, slots: int, error_rate: float, window_s: float, seed: int
) -> dict[str, Any]:
    """Search tasks offered steadily for ``2 * window_s`` while the simulator answers
    ``error_rate`` of requests with 5xx during the middle ``window_s``: retries must not storm,
    the circuit breaker should hold work back while the provider browns out, and (nearly) every
    task must eventually succeed."""
    key = "sim-key"
    duration_s = 2 * window_s
    waves = max(1, int(duration_s / 0.1))
    sim = await SimulatorProcess.start(
        [
            "--seed",
            str(seed),
            "--time-scale",
            "0.1",
            "--key",
            f"{key}=rpm:1000000,tpm:1000000000,concurrency:100000",
        ]
    )
    try:
        cluster = Cluster(
            agents,
            agent_args=["--slots", str(slots)],
            agent_env={"DEERFLOW_SEARCH_BASE_URL": sim.url, "DEERFLOW_SEARCH_API_KEY": key},
        )
        async with cluster, AsyncClient(cluster.address, timeout_s=120) as client:
            await client.agents(wait_for=agents, timeout_s=30)

            async def offer() -> list[dict[str, Any]]:
                runs = []
                per_wave = [tasks // waves + (i < tasks % waves) for i in range(waves)]
                n = 0
                t0 = time.perf_counter()
                for w, count in enumerate(per_wave):
                    batch = [
                        Task(
                            f"s{n + i}",
                            "search",
                            {"query": f"brownout query {n + i}", "max_results": 3},
                            rate_keys=(f"search/{key}",),
                            cache="off",
                        )
                        for i in range(count)
                    ]
                    n += count
                    if batch:
                        runs.append(
                            asyncio.ensure_future(_makespan(client, batch, f"brownout-{w}"))
                        )
                    await asyncio.sleep(max(0.0, t0 + (w + 1) * 0.1 - time.perf_counter()))
                return list(await asyncio.gather(*runs))

            async def brown() -> None:
                await asyncio.sleep(window_s / 2)
                async with aiohttp.ClientSession() as http:
                    await http.post(
                        f"{sim.url}/admin/brownout",
                        json={"error_rate": error_rate, "duration_s": window_s},
                    )

            started = time.perf_counter()
            results, _ = await asyncio.gather(offer(), brown())
            seconds = time.perf_counter() - started
            stats = await client.stats()
        async with aiohttp.ClientSession() as http, http.get(f"{sim.url}/stats") as resp:
            sim_stats: dict[str, Any] = await resp.json()
    finally:
        await sim.stop()
    attempts = [a for r in results for a in r["attempts"].values()]
    succeeded = sum(int(r["succeeded"]) for r in results)
    return {
        "workload": "brownout",
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "succeeded": succeeded,
        "failed": sum(int(r["failed"]) for r in results),
        "success_ratio": round(succeeded / tasks, 5),
        "ratio_to_ideal": round(tasks / max(1, succeeded), 5),
        "ideal_basis": "every task succeeds (ratio = tasks / succeeded; target <= 1.0101)",
        "attempts_mean": round(statistics.fmean(attempts), 3),
        "attempts_max": max(attempts),
        "attempts_histogram": {str(k): v for k, v in sorted(Counter(attempts).items())},
        "retries": stats.retries,
        "circuit_trips": sum(c.trips for c in stats.circuits),
        "circuits": [
            {"key": c.key, "state": c.state, "trips": c.trips, "reason": c.reason}
            for c in stats.circuits
        ],
        "provider": sim_stats.get("keys", {}).get(key, {}),
        "error_rate": error_rate,
        "window_s": window_s,
        "offered_over_s": duration_s,
        "agents": agents,
        "slots": slots,
        "seed": seed,
        "machine": machine(),
    }


def run(coro: Any) -> dict[str, Any]:
    result: dict[str, Any] = asyncio.run(coro)
    return result
