"""Per-API-key admission: RPM and TPM token buckets, a concurrency cap and Ark's burst-slope limit.

Pure and clock-injected: every method takes ``now`` (seconds on any monotonic clock) and does no
I/O, so tests drive it with a fake clock. The algorithms (``TokenBucket``, ``BurstSlope``) are
separate from the gate that combines them for one key (``KeyLimiter``).

Admission is all or nothing: a throttled request consumes nothing and is not counted by the
burst limit, so a client hammering a throttled key does not push its own recovery further away.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from enum import StrEnum

from .config import KeyLimits

__all__ = [
    "CONCURRENCY_RETRY_S",
    "BurstSlope",
    "KeyLimiter",
    "Limit",
    "Permit",
    "RateSnapshot",
    "Throttled",
    "TokenBucket",
]

_EPSILON = 1e-9
"""Slack for float sums: ten takes of 0.1 must empty a bucket of 1.0, not leave it 1e-16 short."""

CONCURRENCY_RETRY_S = 1.0
"""Retry-After for a request refused by the concurrency cap. When a slot frees depends on the
other requests' latencies, which the limiter does not know; a second is what Jina suggests."""


class Limit(StrEnum):
    """Which limit refused a request; the value names it in /stats and in 429 bodies."""

    RPM = "rpm"
    TPM = "tpm"
    CONCURRENCY = "concurrency"
    BURST = "burst"


class TokenBucket:
    """Refills ``rate_per_s`` tokens per second up to ``capacity``.

    A request of ``amount`` passes when the level reaches min(amount, capacity), and then takes
    all of ``amount``: one request larger than the bucket passes on a full bucket and leaves it
    in debt, which the refill repays before the next one. The long-run rate stays
    ``rate_per_s`` whatever the request sizes."""

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._level = capacity
        self._at = now

    def level(self, now: float) -> float:
        """Tokens available at ``now``; negative while in debt."""
        self._refill(now)
        return self._level

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until a request of ``amount`` would pass; 0 when it passes now."""
        missing = min(amount, self.capacity) - self.level(now)
        return 0.0 if missing <= _EPSILON else missing / self.rate_per_s

    def take(self, amount: float, now: float) -> None:
        """Remove ``amount`` (the caller checked ``wait_s`` first); the level may go negative."""
        self._refill(now)
        self._level -= amount

    def give(self, amount: float, now: float) -> None:
        """Return ``amount`` (a refund after settling), never above capacity."""
        self._refill(now)
        self._level = min(self.capacity, self._level + amount)

    def full_in_s(self, now: float) -> float:
        """Seconds until the bucket is full again (OpenAI's ``x-ratelimit-reset-*``)."""
        return max(0.0, self.capacity - self.level(now)) / self.rate_per_s

    def resized(self, rate_per_s: float, capacity: float, now: float) -> TokenBucket:
        """A bucket with the new rate and capacity that keeps this one's level (and debt)."""
        bucket = TokenBucket(rate_per_s, capacity, now)
        bucket._level = min(capacity, self.level(now))
        return bucket

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._level = min(self.capacity, self._level + (now - self._at) * self.rate_per_s)
            self._at = now


class BurstSlope:
    """Volcengine Ark's limit on how fast the request rate may rise.

    With ``w`` the window, ``recent`` the requests admitted in (now - w, now] and ``previous``
    those in (now - 2w, now - w], a request passes when

        recent + 1 <= max(floor_rps * w, (1 + slope) * previous)

    i.e. the rate over the last window may exceed the one before it by at most ``slope``, and
    may always reach ``floor_rps``. A ramp from idle to 100 rps therefore takes several windows
    even when the RPM budget would allow it at once."""

    def __init__(self, slope: float, floor_rps: float, window_s: float) -> None:
        if floor_rps * window_s < 1:
            raise ValueError("floor_rps x window_s must be >= 1 so an idle key can start")
        self.slope = slope
        self.floor_rps = floor_rps
        self.window_s = window_s
        self._times: list[float] = []

    def wait_s(self, now: float) -> float:
        """Seconds until a request would pass, 0 when it passes now.

        The counts only change when an admitted request crosses a window edge, so the answer is
        the first such crossing at which the formula holds; the last one empties both windows,
        which the floor always allows."""
        self._forget(now)
        if self._allows(now):
            return 0.0
        w = self.window_s
        crossings = sorted({t + w for t in self._times} | {t + 2 * w for t in self._times})
        for at in crossings:
            if at > now and self._allows(at):
                return at - now
        raise AssertionError("unreachable: empty windows always pass the floor")

    def record(self, now: float) -> None:
        """Count a request admitted at ``now``."""
        bisect.insort(self._times, now)

    def resized(self, slope: float, floor_rps: float, window_s: float) -> BurstSlope:
        """A limit with the new parameters that remembers this one's admitted requests."""
        burst = BurstSlope(slope, floor_rps, window_s)
        burst._times = list(self._times)
        return burst

    def _allows(self, at: float) -> bool:
        w = self.window_s
        recent = len(self._times) - bisect.bisect_right(self._times, at - w)
        previous = bisect.bisect_right(self._times, at - w) - bisect.bisect_right(
            self._times, at - 2 * w
        )
        allowed = max(self.floor_rps * w, (1 + self.slope) * previous)
        return recent + 1 <= allowed + _EPSILON

    def _forget(self, now: float) -> None:
        stale = bisect.bisect_right(self._times, now - 2 * self.window_s)
        if stale:
            del self._times[:stale]


@dataclass(frozen=True, slots=True)
class Permit:
    """An admitted request: what it was charged, for ``KeyLimiter.release``."""

    requests: float
    tokens: float


@dataclass(frozen=True, slots=True)
class Throttled:
    """A refused request: the limit that binds longest and the seconds until it would pass."""

    limit: Limit
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class RateSnapshot:
    """A key's budget as OpenAI's ``x-ratelimit-*`` headers report it; None for a limit that is
    off. ``remaining_*`` is what may be sent right now (the bucket's level, rounded down),
    ``reset_*_s`` the seconds until the bucket is full again; limits are per minute."""

    limit_requests: float | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


class KeyLimiter:
    """Every limit of one API key. ``admit`` before the work, ``release`` after it, always."""

    def __init__(self, limits: KeyLimits, now: float) -> None:
        self._limits = limits
        self._rpm = _rpm_bucket(limits, now)
        self._tpm = _tpm_bucket(limits, now)
        self._burst = _burst(limits)
        self._in_flight = 0

    @property
    def limits(self) -> KeyLimits:
        return self._limits

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def admit(
        self, now: float, *, requests: float = 1.0, tokens: float = 0.0
    ) -> Permit | Throttled:
        """Admit a request costing ``requests`` of the RPM budget and ``tokens`` of the TPM one.

        Either charges every budget and returns a Permit (the request is then in flight), or
        charges nothing and returns the limit with the longest wait."""
        waits: list[tuple[float, Limit]] = []
        cap = self._limits.concurrency
        if cap is not None and self._in_flight >= cap:
            waits.append((CONCURRENCY_RETRY_S, Limit.CONCURRENCY))
        if self._rpm is not None:
            waits.append((self._rpm.wait_s(requests, now), Limit.RPM))
        if self._tpm is not None and tokens > 0:
            waits.append((self._tpm.wait_s(tokens, now), Limit.TPM))
        if self._burst is not None:
            waits.append((self._burst.wait_s(now), Limit.BURST))
        binding = [(wait, limit) for wait, limit in waits if wait > 0]
        if binding:
            wait, limit = max(binding, key=lambda pair: pair[0])
            return Throttled(limit, wait)
        if self._rpm is not None:
            self._rpm.take(requests, now)
        if self._tpm is not None:
            self._tpm.take(tokens, now)
        if self._burst is not None:
            self._burst.record(now)
        self._in_flight += 1
        return Permit(requests, tokens)

    def release(self, permit: Permit, now: float, *, tokens_used: float | None = None) -> None:
        """End an admitted request. With ``tokens_used``, settle the TPM charge to it: refund
        what was over-charged at admission, or take what was under-charged."""
        self._in_flight = max(0, self._in_flight - 1)
        if self._tpm is None or tokens_used is None:
            return
        difference = permit.tokens - tokens_used
        if difference > 0:
            self._tpm.give(difference, now)
        elif difference < 0:
            self._tpm.take(-difference, now)

    def snapshot(self, now: float) -> RateSnapshot:
        """The budget left at ``now``, for the ``x-ratelimit-*`` headers."""
        rpm, tpm = self._rpm, self._tpm
        return RateSnapshot(
            limit_requests=self._limits.rpm,
            remaining_requests=None if rpm is None else _remaining(rpm, now),
            reset_requests_s=None if rpm is None else rpm.full_in_s(now),
            limit_tokens=self._limits.tpm,
            remaining_tokens=None if tpm is None else _remaining(tpm, now),
            reset_tokens_s=None if tpm is None else tpm.full_in_s(now),
        )

    def refill(self, now: float) -> None:
        """Fill the buckets and forget the burst history; requests in flight stay counted."""
        self._rpm = _rpm_bucket(self._limits, now)
        self._tpm = _tpm_bucket(self._limits, now)
        self._burst = _burst(self._limits)

    def reconfigure(self, limits: KeyLimits, now: float) -> None:
        """Change the limits at run time, keeping the buckets' levels (clamped to the new
        capacities), the burst history and the requests in flight."""
        rpm, tpm = _rpm_bucket(limits, now), _tpm_bucket(limits, now)
        if rpm is not None and self._rpm is not None:
            rpm = self._rpm.resized(rpm.rate_per_s, rpm.capacity, now)
        if tpm is not None and self._tpm is not None:
            tpm = self._tpm.resized(tpm.rate_per_s, tpm.capacity, now)
        burst = _burst(limits)
        if burst is not None and self._burst is not None:
            burst = self._burst.resized(burst.slope, burst.floor_rps, burst.window_s)
        self._limits, self._rpm, self._tpm, self._burst = limits, rpm, tpm, burst


def _rpm_bucket(limits: KeyLimits, now: float) -> TokenBucket | None:
    if limits.rpm is None:
        return None
    return TokenBucket(limits.rpm / 60, max(1.0, limits.rpm / 60), now)


def _tpm_bucket(limits: KeyLimits, now: float) -> TokenBucket | None:
    if limits.tpm is None:
        return None
    return TokenBucket(limits.tpm / 60, limits.tpm / 60, now)


def _burst(limits: KeyLimits) -> BurstSlope | None:
    if limits.burst_slope is None:
        return None
    return BurstSlope(limits.burst_slope, limits.burst_floor_rps, limits.burst_window_s)


def _remaining(bucket: TokenBucket, now: float) -> int:
    return max(0, math.floor(bucket.level(now) + _EPSILON))
