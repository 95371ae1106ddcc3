"""Token buckets and a slope window: the enforcement primitives. Pure; time is passed in."""

from __future__ import annotations

import collections
import math

_EPSILON = 1e-9
"""Float slack: a refill computed to reach exactly 1.0 may land at 0.9999999999999996."""


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
        return self.level + _EPSILON >= min(amount, self.capacity)

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
        if need <= _EPSILON:
            return now
        return now + need / self.rate if self.rate > 0 else math.inf

    def set_rate(self, rate: float, capacity: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)


class SlopeWindow:
    """Limits how fast the request rate may rise, as Volcengine Ark does ("limit_burst_rate").

    Over sliding windows of ``window_s`` (as the provider counts), an admission is allowed when
    ``recent + 1 <= max(floor_rps * window_s, previous + growth)`` where recent and previous
    are the admissions in the last window and the one before it, and
    ``growth = floor(slope * previous * safety)``, at least 1 once ``slope * previous >= 1``.
    Integer growth keeps the rate climbing from the floor (a bare ``(1 + slope) * previous``
    times a safety factor rounds down to no growth at small counts) while staying at or under
    the provider's ``(1 + slope) * previous``.

    Requests reach the provider ``jitter_s`` later or sooner than we admit them, so the recent
    window is counted ``jitter_s`` wider and the previous one that much narrower: whatever the
    delays, the provider never sees more recent or fewer previous requests than we assumed."""

    __slots__ = ("floor_rps", "jitter_s", "safety", "slope", "stamps", "window_s")

    def __init__(
        self,
        slope: float,
        floor_rps: float,
        window_s: float,
        now: float,
        safety: float = 0.9,
        jitter_s: float = 0.0,
    ) -> None:
        self.slope = slope
        self.floor_rps = floor_rps
        self.window_s = window_s
        self.safety = safety
        self.jitter_s = jitter_s
        self.stamps: collections.deque[float] = collections.deque()

    def _counts(self, now: float) -> tuple[int, int]:
        stamps = self.stamps
        horizon = now - 2 * self.window_s
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        split = now - self.window_s - self.jitter_s
        start = horizon + self.jitter_s
        previous = recent = 0
        for t in stamps:
            if t > split:
                recent += 1
            elif t > start:
                previous += 1
        return recent, previous

    def allowance(self, now: float) -> float:
        """Admissions the current sliding window may hold."""
        _, previous = self._counts(now)
        raw = self.slope * previous
        growth = max(math.floor(raw * self.safety), 1 if raw >= 1 else 0)
        return max(self.floor_rps * self.window_s, previous + growth)

    def can_take(self, now: float) -> bool:
        recent, _ = self._counts(now)
        return recent + 1 <= self.allowance(now) + _EPSILON

    def take(self, now: float) -> None:
        self.stamps.append(now)

    def idle(self, now: float) -> bool:
        """No admission is left in the windows counted: a fresh window is the same."""
        self._counts(now)
        return not self.stamps

    def forget_one(self) -> None:
        """The provider refused a request (it does not count refused ones): drop the newest."""
        if self.stamps:
            self.stamps.pop()

    def ready_at(self, now: float) -> float:
        """When the oldest admission counted as recent leaves the window (re-check then)."""
        if self.can_take(now):
            return now
        split = now - self.window_s - self.jitter_s
        for t in self.stamps:
            if t > split:
                return t + self.window_s + self.jitter_s
        return now + self.window_s
