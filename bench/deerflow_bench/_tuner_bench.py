"""``deerflow bench tuner``: the AutoPerformanceTuner against hand-tuned settings on the io
workload (issue #16 item 4).

The io workload of ``deerflow bench io`` (sleep tasks, log-normal durations, median 50 ms),
fed without end so that work always waits: a feeder keeps a backlog of tasks submitted and not
finished, read from the admin API. Throughput is the controller's count of succeeded tasks per
second, sampled through the SDK.

1. **Hand-tuned**: one cluster per slot limit (``--agent-slot-limit``; agents declare
   ``--slots``), tuner off; the steady throughput of each after a warm-up, measured before and
   after the tuned run (the shared machine's load drifts); the best of all is the reference.
2. **Tuned**: a cluster whose controller starts at ``--agent-slot-limit 1`` with ``--tuner on``;
   its throughput each second, the time its 3-s mean first reaches 90 % of the best, and its
   5-s windows after that, against the best and against their own mean.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
import time
from typing import Any

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster
from ._throughput import machine

REACH = 0.9
"""Share of the best hand-tuned throughput the tuner must reach (within 30 s)."""
STAY = 0.05
"""How far its 5-s windows may stray afterwards."""
WINDOW_S = 5


def _done(s: Any) -> int:
    return int(s.succeeded + s.failed + s.cancelled + s.timed_out)


async def _drive(
    client: AsyncClient, seconds: float, durations: itertools.cycle[float], backlog: int
) -> tuple[list[tuple[float, int]], float]:
    """Keep ``backlog`` tasks outstanding for ``seconds``; (time, succeeded) about every 0.25 s
    from the first submit, and the wall-clock time of that start."""
    samples: list[tuple[float, int]] = []
    wall = time.time()
    started = time.perf_counter()
    job_no = 0
    chunk = max(100, backlog // 4)
    while True:
        now = time.perf_counter() - started
        stats = await client.stats()
        samples.append((now, int(stats.succeeded)))
        if now >= seconds:
            return samples, wall
        outstanding = int(stats.submitted) - _done(stats)
        while outstanding < backlog:
            job_no += 1
            work = [Task(f"t{i}", "sleep", {"seconds": next(durations)}) for i in range(chunk)]
            await client.submit(work, name=f"bench-tuner-{job_no}")
            outstanding += chunk
        await asyncio.sleep(0.25)  # the sampling period


def _windows(series: list[float]) -> list[float]:
    """Means of consecutive whole ``WINDOW_S``-second windows."""
    return [
        statistics.fmean(series[i : i + WINDOW_S])
        for i in range(0, len(series) - WINDOW_S + 1, WINDOW_S)
    ]


def _per_second(samples: list[tuple[float, int]]) -> list[float]:
    """Succeeded per second over each whole second since the first sample."""
    out: list[float] = []
    i = 0
    for sec in range(1, int(samples[-1][0]) + 1):
        while i + 1 < len(samples) and samples[i + 1][0] <= sec:
            i += 1
        j = i
        while j > 0 and samples[j][0] > sec - 1:
            j -= 1
        (t0, n0), (t1, n1) = samples[j], samples[i]
        out.append((n1 - n0) / (t1 - t0) if t1 > t0 else 0.0)
    return out


async def _run_cluster(
    agents: int,
    slots: int,
    controller_args: list[str],
    seconds: float,
    durations: itertools.cycle[float],
    backlog: int,
) -> tuple[list[tuple[float, int]], Any, float]:
    async with (
        Cluster(
            agents, agent_args=["--slots", str(slots)], controller_args=controller_args
        ) as cluster,
        AsyncClient(cluster.address, timeout_s=60) as client,
    ):
        await client.agents(wait_for=agents, timeout_s=30)
        samples, wall = await _drive(client, seconds, durations, backlog)
        stats = await client.stats()
    return samples, stats, wall


async def tuner(
    *,
    agents: int,
    slots: int,
    hand_limits: list[int],
    hand_s: float,
    tuned_s: float,
    interval_s: float,
    median_s: float,
    sigma: float,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    durations = itertools.cycle(
        [round(rng.lognormvariate(0, sigma) * median_s, 4) for _ in range(10_000)]
    )
    # Work must wait at every instant: the feeder tops up every 0.25 s, and 2,000 tasks last
    # about a second at the best rate here.
    backlog = max(2000, 8 * agents * slots)
    warm_s = min(3.0, hand_s / 3)

    # Each hand-tuned run's per-second rates after its warm-up, by limit and round: the spread of
    # a fixed configuration's own 5-s windows is the machine's noise floor, against which the
    # tuned run's windows after settling are read.
    hand_series: dict[str, list[list[float]]] = {}

    async def by_hand() -> dict[str, float]:
        out: dict[str, float] = {}
        for limit in hand_limits:
            args = ["--tuner", "off", "--agent-slot-limit", str(limit)]
            samples, _, _ = await _run_cluster(agents, slots, args, hand_s, durations, backlog)
            steady = [(t, n) for t, n in samples if t >= warm_s]
            (t0, n0), (t1, n1) = steady[0], steady[-1]
            out[str(limit)] = round((n1 - n0) / (t1 - t0), 1)
            warm = math.ceil(warm_s)
            hand_series.setdefault(str(limit), []).append(_per_second(samples)[warm:])
        return out

    # By hand before and after the tuned run (the machine's load drifts): each limit's best.
    hand_before = await by_hand()

    args = [
        "--tuner", "on",
        "--tuner-interval-s", f"{interval_s:g}",
        "--agent-slot-limit", "1",
    ]  # fmt: skip
    samples, stats, t0 = await _run_cluster(agents, slots, args, tuned_s, durations, backlog)
    hand_after = await by_hand()
    hand = {k: max(v, hand_after[k]) for k, v in hand_before.items()}
    best_limit, best = max(hand.items(), key=lambda kv: kv[1])
    series = _per_second(samples)
    reached_s: int | None = None
    for sec in range(3, len(series) + 1):
        if statistics.fmean(series[sec - 3 : sec]) >= REACH * best:
            reached_s = sec
            break
    after: list[float] = []
    if reached_s is not None:
        rest = series[reached_s:]
        after = _windows(rest)
    mean_after = statistics.fmean(after) if after else 0.0
    # Settled: the last verdict; from the next whole second on, the tuner changed nothing.
    judged = [c.judged_at - t0 for c in stats.tuning.history if c.judged]
    settled_s = math.ceil(max(judged)) if judged else None
    settled = (
        _windows(series[settled_s:]) if settled_s is not None and stats.tuning.converged else []
    )
    # The same configuration's own windows, both rounds: how far a 5-s window of a configuration
    # nobody changes strays from the reference on this machine now.
    fixed = [w for run in hand_series[best_limit] for w in _windows(run)]
    changed_after = sum(
        1 for c in stats.tuning.history if settled_s is not None and c.at - t0 > settled_s
    )
    return {
        "workload": "tuner",
        "agents": agents,
        "declared_slots": slots,
        "hand_tuned_tasks_per_s": {"before": hand_before, "after": hand_after},
        "best_hand_tuned": {"agent_slot_limit": int(best_limit), "tasks_per_s": best},
        "tuned_series_tasks_per_s": [round(x, 1) for x in series],
        "reached_90pct_after_s": reached_s,
        "reached_within_30_s": reached_s is not None and reached_s <= 30,
        "after_reach_5s_windows_vs_best": [round(x / best, 3) for x in after],
        "after_reach_mean_vs_best": round(mean_after / best, 3) if after else None,
        "last_20_s_mean_vs_best": round(statistics.fmean(series[-20:]) / best, 3),
        "after_reach_stays_within_5pct_of_its_mean": bool(after)
        and all(abs(x - mean_after) <= STAY * mean_after for x in after),
        "after_reach_stays_within_5pct_of_best": bool(after)
        and all(x >= (1 - STAY) * best for x in after),
        "converged": stats.tuning.converged,
        "settled_after_s": settled_s,
        "after_settled_5s_windows_vs_best": [round(x / best, 3) for x in settled],
        "after_settled_stays_within_5pct_of_best": bool(settled)
        and all(x >= (1 - STAY) * best for x in settled),
        "after_settled_mean_vs_best": (
            round(statistics.fmean(settled) / best, 3) if settled else None
        ),
        "changes_after_settled": changed_after,
        "best_hand_tuned_own_5s_windows_vs_best": [round(x / best, 3) for x in fixed],
        "final_knobs": {k.name: k.value for k in stats.tuning.knobs},
        "tuner_history": [
            {
                "t_s": round(c.at - t0, 1),
                "judged_s": round(c.judged_at - t0, 1) if c.judged else None,
                "knob": c.knob,
                "change": f"{c.old_value}->{c.new_value}",
                "outcome": c.outcome,
                "before": round(c.before, 1),
                "after": round(c.after, 1) if c.judged else None,
            }
            for c in stats.tuning.history
        ],
        "hand_s": hand_s,
        "tuned_s": tuned_s,
        "interval_s": interval_s,
        "median_s": median_s,
        "sigma": sigma,
        "seed": seed,
        "backlog": backlog,
        "machine": machine(),
    }
