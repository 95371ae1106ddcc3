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
from dataclasses import dataclass

__all__ = ["Measurement", "Objective", "score"]


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
