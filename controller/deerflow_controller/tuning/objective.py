"""What the tuner measures over one interval, and the objective it scores that by.

A :class:`Measurement` is what the controller counted between two tuner steps (the shell's
counters, the limiter's 429s, the latency tap's samples); :func:`score` turns it into one number
where higher is better, or None when the window says nothing about the objective (too few
completions, or, for throughput, no work waiting for a slot or a rate key, so throughput measured
the arrivals and not what the cluster can do).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Measurement",
    "Objective",
    "latency_parts",
    "p95",
    "pooled_p95",
    "pooled_score",
    "score",
]


class Objective(enum.Enum):
    """What the tuner maximises (``--tuner-objective``)."""

    THROUGHPUT = "throughput"
    """Tasks succeeded per second."""
    LATENCY = "latency"
    """The p95 of a task's time from ready to result (lower is better)."""
    COST = "cost"
    """Attempts sent to agents per task succeeded (retries and 429s cost requests and tokens;
    lower is better)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """Counts over the window ``[start, end)`` (seconds on the controller's clock)."""

    start: float
    end: float
    succeeded: int
    failed: int
    attempts: int
    """Attempts dispatched to agents (first tries and retries)."""
    rate_limited: int
    """429s providers answered (all rate keys)."""
    p95_s: float
    """p95 of queue wait plus p95 of run time of the tasks that finished (0 with none)."""
    queued: int
    """Tasks ready and waiting for a slot at ``end`` (not those held by rate keys)."""
    saturated: bool
    """Whether the agents' slots were (nearly) all in use at ``end``."""
    throttled: int = 0
    """Tasks waiting on their rate keys at ``end`` (THROTTLED)."""
    wait_samples: tuple[float, ...] = ()
    """Queue waits of the tasks dispatched in the window (seconds), when the controller keeps
    them: several windows' samples are pooled into one p95 (:func:`pooled_score`)."""
    run_samples: tuple[float, ...] = ()
    """Run times of the tasks that finished in the window (seconds), as above."""

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def throughput(self) -> float:
        s = self.seconds
        return self.succeeded / s if s > 0 else 0.0

    def describe(self) -> str:
        """A short line of the numbers, for the history's reasons."""
        return (
            f"{self.throughput:.1f} tasks/s, p95 {self.p95_s * 1000:.0f} ms, "
            f"{self.failed} failed, {self.rate_limited} 429s over {self.seconds:.1f} s"
        )


MIN_COMPLETIONS = 10
"""A window with fewer successes says too little to judge a change by."""


def p95(values: Sequence[float]) -> float:
    """The 95th percentile of ``values`` (nearest rank; 0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.95 * len(ordered)) - 1))]


def _quantile_spread(values: Sequence[float], q: float = 0.95, z: float = 1.96) -> float:
    """Half the width of a distribution-free confidence interval of the ``q`` quantile of
    ``values`` (the order statistics at ranks ``nq -+ z sqrt(nq(1-q))``): how far the sample
    quantile may be from the true one, from the samples alone."""
    n = len(values)
    if n == 0:
        return 0.0
    ordered = sorted(values)
    half = z * math.sqrt(n * q * (1.0 - q))
    lo = min(n - 1, max(0, math.floor(n * q - half) - 1))
    hi = min(n - 1, max(0, math.ceil(n * q + half) - 1))
    return (ordered[hi] - ordered[lo]) / 2.0


def pooled_score(
    objective: Objective, windows: Sequence[Measurement]
) -> tuple[float, float] | None:
    """The objective over several windows taken as one (each already judged usable by
    :func:`score`), and its spread: half the width of a ~95 % interval around it, from the
    windows' own counts and samples. Throughput is all successes over all their seconds
    (spread from the count's Poisson noise), latency the p95 of their pooled samples (spread
    from the order statistics around it; the successes-weighted mean of their p95s and no
    spread when they carry none), cost all attempts over all successes (spread from the
    retries' Poisson noise). None for no windows or no successes.

    Pooled rather than averaged window by window: at a few tasks a second a window's p95 is
    one of its slowest few tasks, and the mean of such p95s is mostly noise."""
    done = sum(m.succeeded for m in windows)
    if not windows or done <= 0:
        return None
    if objective is Objective.THROUGHPUT:
        seconds = math.fsum(m.seconds for m in windows)
        if seconds <= 0:
            return None
        return done / seconds, 1.96 * math.sqrt(done) / seconds
    if objective is Objective.LATENCY:
        value, spread = pooled_p95(windows)
        return (-value, spread) if math.isfinite(value + spread) else None
    attempts = sum(m.attempts for m in windows)
    return -(attempts / done), 1.96 * math.sqrt(max(1, attempts - done)) / done


def pooled_p95(windows: Sequence[Measurement]) -> tuple[float, float]:
    """p95 queue wait plus p95 run time of ``windows`` taken as one, and its spread (see
    :func:`pooled_score`); the successes-weighted mean of their p95s, with no spread, when they
    carry no samples (0 for no successes)."""
    waits = [x for m in windows for x in m.wait_samples]
    runs = [x for m in windows for x in m.run_samples]
    if waits or runs:
        return p95(waits) + p95(runs), _quantile_spread(waits) + _quantile_spread(runs)
    done = sum(m.succeeded for m in windows)
    return (math.fsum(m.p95_s * m.succeeded for m in windows) / done if done else 0.0), 0.0


def latency_parts(windows: Sequence[Measurement]) -> tuple[float, float, float, float] | None:
    """The two parts of the latency score over ``windows`` pooled: (p95 wait, its spread,
    p95 run time, its spread); None when the windows carry no samples of either."""
    waits = [x for m in windows for x in m.wait_samples]
    runs = [x for m in windows for x in m.run_samples]
    if not waits or not runs:
        return None
    return p95(waits), _quantile_spread(waits), p95(runs), _quantile_spread(runs)


def score(
    objective: Objective, m: Measurement, min_completions: int = MIN_COMPLETIONS
) -> float | None:
    """The objective's value of ``m``, higher is better; None when ``m`` cannot judge it."""
    if m.seconds <= 0 or m.succeeded < min_completions:
        return None
    if objective is Objective.THROUGHPUT:
        # Without waiting work, throughput is the arrival rate: no setting would change it.
        waiting = m.queued > 0 or m.throttled > 0 or m.saturated
        return m.throughput if waiting else None
    if objective is Objective.LATENCY:
        return -m.p95_s if math.isfinite(m.p95_s) else None
    return -(m.attempts / m.succeeded)
