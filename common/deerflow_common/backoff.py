"""Exponential backoff with jitter: the pause before the next try of a reconnect or retry loop.

One formula serves every such loop (the SDK's failover, the agent's reconnects, the launcher's
wait for a controller, etcd's watches, requests and keepalives); each picks its base, cap and
jitter. After ``n`` pauses since the last :meth:`Backoff.reset`::

    ceiling_n = min(cap_s, base_s * 2**n)                      seconds
    pause_n   = ceiling_n * (jitter.low + (jitter.high - jitter.low) * u),  u = random() in [0, 1)

Jitter spreads the tries of many clients that lost the same server at the same moment, so they
do not come back in step. The task retries of the scheduling core use their own, decorrelated
jitter (``deerflow_controller.recovery.retry``): they draw from the core's seeded random source.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CENTRED_JITTER", "EQUAL_JITTER", "FULL_JITTER", "NO_JITTER", "Backoff", "Jitter"]


@dataclass(frozen=True, slots=True)
class Jitter:
    """A pause is drawn uniformly from ``[low, high)`` times the current ceiling."""

    low: float
    high: float

    def __post_init__(self) -> None:
        finite = math.isfinite(self.low) and math.isfinite(self.high)
        if not (finite and 0 <= self.low <= self.high):
            raise ValueError(
                f"jitter needs finite factors with 0 <= low <= high, got {self.low}..{self.high}"
            )


FULL_JITTER = Jitter(0.0, 1.0)
"""Anywhere from no pause to the ceiling: spreads tries the most."""
EQUAL_JITTER = Jitter(0.5, 1.0)
"""Half the ceiling, plus up to another half: pauses still grow, tries still spread."""
CENTRED_JITTER = Jitter(0.5, 1.5)
"""The ceiling, give or take half of it: the mean pause is the ceiling itself."""
NO_JITTER = Jitter(1.0, 1.0)
"""Exactly the ceiling: for a single waiter that nobody else competes with."""


class Backoff:
    """Pauses that double from ``base_s`` to ``cap_s`` seconds, with ``jitter`` (see the module's
    formula). Not thread-safe; one per loop.

    ``random`` is the source of ``u`` (default :func:`random.random`); tests pass a fake.
    Raises ValueError unless ``0 < base_s <= cap_s`` and both are finite."""

    def __init__(
        self,
        base_s: float,
        cap_s: float,
        *,
        jitter: Jitter = EQUAL_JITTER,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not (math.isfinite(base_s) and math.isfinite(cap_s) and 0 < base_s <= cap_s):
            raise ValueError(
                f"backoff needs finite seconds with 0 < base <= cap, got base {base_s}, cap {cap_s}"
            )
        self.base_s = base_s
        self.cap_s = cap_s
        self.jitter = jitter
        self._random = random
        self._ceiling_s = base_s

    @property
    def ceiling_s(self) -> float:
        """The ceiling the next pause is drawn under, in seconds."""
        return self._ceiling_s

    def delay(self) -> float:
        """The next pause in seconds; each call doubles the ceiling, up to ``cap_s``."""
        ceiling = self._ceiling_s
        self._ceiling_s = min(ceiling * 2, self.cap_s)
        low, high = self.jitter.low, self.jitter.high
        return ceiling * (low + (high - low) * self._random())

    def reset(self) -> None:
        """A try got through: the next pause starts from ``base_s`` again."""
        self._ceiling_s = self.base_s
