"""Token buckets and a slope window: the enforcement primitives. Pure; time is passed in."""

from __future__ import annotations

import math


class TokenBucket:
    """Refills at ``rate`` tokens per second up to ``capacity``; starts full.

    ``take`` may drive the level negative (a debt, e.g. when reported token usage exceeds the
    estimate): later takes then wait until the debt is paid back by the refill."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.level

    def can_take(self, amount: float, now: float) -> bool:
        """True when ``amount`` fits now. An amount above capacity fits a full bucket, so one
        oversized request is never blocked for ever."""
        self._refill(now)
        return self.level >= min(amount, self.capacity)

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Refund (positive) or charge (negative) a correction, e.g. actual minus estimate."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def ready_at(self, amount: float, now: float) -> float:
        """Earliest time at which ``amount`` fits (``now`` when it fits already)."""
        self._refill(now)
        need = min(amount, self.capacity) - self.level
        if need <= 0:
            return now
        return now + need / self.rate if self.rate > 0 else math.inf

    def set_rate(self, rate: float, capacity: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)


class SlopeWindow:
    """Limits how fast the request rate may rise, as Volcengine Ark does ("limit_burst_rate").

    Formula: admissions in the current window of ``window_s`` may not exceed
    ``max(floor_rps * window_s, (1 + slope) * admissions in the previous window) * safety``."""

    __slots__ = ("count", "floor_rps", "prev_count", "safety", "slope", "start", "window_s")

    def __init__(
        self, slope: float, floor_rps: float, window_s: float, now: float, safety: float = 0.9
    ) -> None:
        self.slope = slope
        self.floor_rps = floor_rps
        self.window_s = window_s
        self.safety = safety
        self.start = now
        self.count = 0
        self.prev_count = 0

    def _roll(self, now: float) -> None:
        elapsed = now - self.start
        if elapsed >= self.window_s:
            windows = int(elapsed // self.window_s)
            self.prev_count = self.count if windows == 1 else 0
            self.count = 0
            self.start += windows * self.window_s

    def allowance(self, now: float) -> float:
        self._roll(now)
        ceiling = max(self.floor_rps * self.window_s, (1 + self.slope) * self.prev_count)
        return ceiling * self.safety

    def can_take(self, now: float) -> bool:
        return self.count + 1 <= self.allowance(now)

    def take(self, now: float) -> None:
        self._roll(now)
        self.count += 1

    def ready_at(self, now: float) -> float:
        return now if self.can_take(now) else self.start + self.window_s
