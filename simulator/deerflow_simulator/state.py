"""The simulated providers' shared state: keys and their limiters, counters, the brown-out window
and the seeded random draws. No I/O; the HTTP layer (``endpoints``, ``admin``) calls into it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import KeyLimits, LatencyModel, SimConfig
from .limits import KeyLimiter
from .stats import Stats

__all__ = ["Clock", "Completion", "ProviderState"]

Clock = Callable[[], float]
"""Seconds on a monotonic clock; tests pass a fake one to drive the limits."""

MAX_COMPLETION_TOKENS = 5_000
MIN_COMPLETION_TOKENS = 30
FAILURE_STATUSES = (500, 502, 503)


@dataclass(frozen=True, slots=True)
class Completion:
    """A drawn completion length; ``truncated`` when max_tokens cut it short."""

    tokens: int
    truncated: bool


class ProviderState:
    """Everything the endpoints share. Its random draws come from one generator seeded with
    ``config.seed``: the same requests in the same order give the same latencies and failures."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.started_at = clock()
        self.stats = Stats(set(config.keys))
        self._limiters = {key: KeyLimiter(lim, self.started_at) for key, lim in config.keys.items()}
        self._rng = random.Random(config.seed)
        self._brownout_rate = 0.0
        self._brownout_until = -math.inf

    def now(self) -> float:
        return self.clock()

    # ------------------------------------------------------------------ keys

    def limiter(self, key: str | None) -> KeyLimiter | None:
        """The limiter of a known key; None for a missing or unknown one."""
        return self._limiters.get(key) if key else None

    def set_limits(self, key: str, limits: KeyLimits) -> None:
        """Change a key's limits at run time, or add the key."""
        limiter = self._limiters.get(key)
        if limiter is None:
            self._limiters[key] = KeyLimiter(limits, self.now())
            self.stats.know(key)
        else:
            limiter.reconfigure(limits, self.now())

    def limits_of(self, key: str) -> KeyLimits | None:
        limiter = self._limiters.get(key)
        return None if limiter is None else limiter.limits

    # ------------------------------------------------------------------ draws

    def latency_s(self, model: LatencyModel, extra_s: float = 0.0) -> float:
        """A log-normal draw from ``model`` plus ``extra_s``, times the config's time_scale."""
        draw = model.median_s * math.exp(model.sigma * self._rng.gauss(0.0, 1.0))
        return (draw + extra_s) * self.config.time_scale

    def chat_latency_s(self, completion_tokens: int) -> float:
        """Time to first token plus the completion at the configured output speed."""
        latencies = self.config.latencies
        return self.latency_s(
            latencies.llm_first_token, completion_tokens / latencies.llm_tokens_per_s
        )

    def completion(self, max_tokens: int | None) -> Completion:
        """A log-normal completion length clamped to 30..min(max_tokens, 5000)."""
        config = self.config
        draw = round(
            config.completion_median_tokens
            * math.exp(config.completion_sigma * self._rng.gauss(0.0, 1.0))
        )
        ceiling = MAX_COMPLETION_TOKENS if max_tokens is None else min(max_tokens, 5_000)
        tokens = min(ceiling, max(MIN_COMPLETION_TOKENS, draw))
        return Completion(tokens, truncated=max_tokens is not None and draw > max_tokens)

    def failure_status(self) -> int | None:
        """500, 502 or 503 for a share of requests (error_rate, or the brown-out's while one
        lasts); None for the rest."""
        rate = self.config.error_rate
        if self.now() < self._brownout_until:
            rate = max(rate, self._brownout_rate)
        if rate <= 0 or self._rng.random() >= rate:
            return None
        return self._rng.choice(FAILURE_STATUSES)

    # ------------------------------------------------------------------ operations

    def start_brownout(self, error_rate: float, duration_s: float) -> None:
        """Fail ``error_rate`` of the requests for the next ``duration_s`` seconds (replacing
        any brown-out in progress; a rate of 0 ends it)."""
        self._brownout_rate = error_rate
        self._brownout_until = self.now() + duration_s

    def brownout(self) -> dict[str, float] | None:
        remaining = self._brownout_until - self.now()
        if remaining <= 0 or self._brownout_rate <= 0:
            return None
        return {"error_rate": self._brownout_rate, "remaining_s": round(remaining, 3)}

    def reset(self, *, limiters: bool = False) -> None:
        """Zero the counters; with ``limiters``, also refill every bucket and forget the burst
        history (requests in flight stay counted)."""
        self.stats.reset()
        if limiters:
            for limiter in self._limiters.values():
                limiter.refill(self.now())

    def stats_json(self) -> dict[str, Any]:
        return {
            "keys": self.stats.to_json(),
            "uptime_s": round(self.now() - self.started_at, 3),
            "brownout": self.brownout(),
        }
