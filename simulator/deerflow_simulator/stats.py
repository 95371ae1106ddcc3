"""Counters per API key, as ``GET /stats`` reports them.

Every answered request lands in exactly one outcome: served (2xx), throttled (429), failed (5xx),
unauthorized (unknown or missing key), invalid (400 or the reader's 422) or cancelled (the
client hung up before the answer). Benchmarks read these to check what a provider saw, e.g. that
N agents together never went over the key's RPM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .limits import Limit

__all__ = ["MISSING_KEY", "OTHER_KEYS", "KeyStats", "Outcome", "Stats"]

MISSING_KEY = "<none>"
"""Where requests without any key are counted."""
OTHER_KEYS = "<other>"
"""Where unknown keys are counted once ``MAX_UNKNOWN_KEYS`` distinct ones have been seen, so a
client cycling random keys cannot grow the table without bound."""
MAX_UNKNOWN_KEYS = 100


class Outcome(StrEnum):
    SERVED = "served"
    THROTTLED = "throttled"
    FAILED = "failed"
    UNAUTHORIZED = "unauthorized"
    INVALID = "invalid"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class KeyStats:
    """One key's counters; ``tokens`` are the prompt + completion tokens of served chats."""

    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    in_flight: int = 0
    max_in_flight: int = 0
    tokens: int = 0
    by_endpoint: dict[str, dict[Outcome, int]] = field(default_factory=dict)
    throttled_by: dict[Limit, int] = field(default_factory=lambda: dict.fromkeys(Limit, 0))

    def to_json(self) -> dict[str, Any]:
        return {
            **{outcome.value: n for outcome, n in self.counts.items()},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "tokens": self.tokens,
            "by_endpoint": {
                endpoint: {outcome.value: n for outcome, n in counts.items()}
                for endpoint, counts in sorted(self.by_endpoint.items())
            },
            "throttled_by": {limit.value: n for limit, n in self.throttled_by.items()},
        }


class Stats:
    """All keys' counters. Not thread-safe: the server's event loop is its only user."""

    def __init__(self, known_keys: set[str]) -> None:
        self._known = set(known_keys)
        self._keys: dict[str, KeyStats] = {key: KeyStats() for key in known_keys}

    def know(self, key: str) -> None:
        """Count ``key`` under its own name from now on (a key added at run time)."""
        self._known.add(key)
        self._keys.setdefault(key, KeyStats())

    def key(self, key: str | None) -> KeyStats:
        """The counters of ``key``; unknown keys beyond the first hundred share one entry."""
        name = key or MISSING_KEY
        if name not in self._keys and name not in self._known:
            unknown = len(self._keys.keys() - self._known)
            if unknown >= MAX_UNKNOWN_KEYS:
                name = OTHER_KEYS
        return self._keys.setdefault(name, KeyStats())

    def record(
        self,
        key: str | None,
        endpoint: str,
        outcome: Outcome,
        *,
        limit: Limit | None = None,
        tokens: int = 0,
    ) -> None:
        """Count one answered request."""
        stats = self.key(key)
        stats.counts[outcome] += 1
        per_endpoint = stats.by_endpoint.setdefault(endpoint, dict.fromkeys(Outcome, 0))
        per_endpoint[outcome] += 1
        stats.tokens += tokens
        if limit is not None:
            stats.throttled_by[limit] += 1

    def begin(self, key: str) -> None:
        """A request of ``key`` starts its work (it holds a concurrency slot)."""
        stats = self.key(key)
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)

    def end(self, key: str) -> None:
        self.key(key).in_flight -= 1

    def reset(self) -> None:
        """Zero every counter; requests in flight stay counted as in flight."""
        for name, old in list(self._keys.items()):
            self._keys[name] = KeyStats(in_flight=old.in_flight, max_in_flight=old.in_flight)

    def to_json(self) -> dict[str, Any]:
        return {name: stats.to_json() for name, stats in sorted(self._keys.items())}
