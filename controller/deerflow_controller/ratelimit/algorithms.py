"""Limit algorithms: how a key's limits adapt to what the provider says. Each class states its
formula; enforcement lives in ``gate.py``. Pure: time is passed in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class AimdConcurrency:
    """Additive-increase, multiplicative-decrease concurrency limit (after Netflix's AIMDLimit).

    On a success: ``limit = min(max_limit, limit + 1 / limit)``, i.e. +1 per window of limit
    successes. On a rate-limit or timeout signal: ``limit = max(min_limit, limit * backoff)``."""

    limit: float
    min_limit: float = 1.0
    max_limit: float = 1024.0
    backoff: float = 0.8

    def on_success(self) -> None:
        self.limit = min(self.max_limit, self.limit + 1.0 / self.limit)

    def on_overload(self) -> None:
        self.limit = max(self.min_limit, self.limit * self.backoff)

    @property
    def value(self) -> int:
        return max(1, int(self.limit))


@dataclass(slots=True)
class RateLearner:
    """Learns a provider's real request rate (per second) for a key whose limit is unknown or
    may be wrong.

    - A provider that states its limit (``x-ratelimit-limit-requests``, per minute) is believed:
      ``rate = stated / 60``.
    - Otherwise, while demand presses on the rate and no 429 comes back, grow once per second of
      pressure: ``rate *= 2`` until the first 429 (slow start); after it, climb back halfway to
      the rate that met the 429 each second (``rate += max(increase_rps, (last_bad - rate)/2)``
      while below 95 % of it), then probe past it slowly (``rate += increase_rps / 4``).
    - On a 429: ``rate = max(min_rps, min(rate, observed_rate) * backoff)``, where observed_rate
      is what was actually admitted over the last window.
    The estimate never exceeds a configured limit."""

    rate: float
    ceiling: float
    min_rps: float = 0.2
    increase_rps: float = 2.0
    backoff: float = 0.7
    stated: bool = False
    last_increase: float = 0.0
    slow_start: bool = True
    last_bad: float = 0.0
    """The rate at which the last 429 came back (0 before any)."""

    def on_stated_limit(self, per_minute: float) -> bool:
        """A provider header named the limit; returns True when the estimate changed."""
        new = min(self.ceiling, per_minute / 60.0)
        changed = not self.stated or abs(new - self.rate) > 1e-9
        self.rate = new
        self.stated = True
        return changed

    def on_pressure(self, now: float) -> None:
        """Demand exceeded the rate at ``now``: grow, at most once per second."""
        if self.stated or now - self.last_increase < 1.0:
            return
        self.last_increase = now
        if self.slow_start:
            grown = self.rate * 2
        elif self.rate < 0.95 * self.last_bad:
            grown = self.rate + max(self.increase_rps, (self.last_bad - self.rate) / 2)
        else:
            grown = self.rate + self.increase_rps / 4
        self.rate = min(self.ceiling, grown)

    def on_rate_limited(self, observed_rps: float, now: float) -> None:
        self.last_bad = self.rate
        self.rate = max(self.min_rps, min(self.rate, observed_rps or self.rate) * self.backoff)
        self.last_increase = now
        self.slow_start = False
