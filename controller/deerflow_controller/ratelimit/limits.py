"""Configured limits per rate-key pattern, and the conservative default for unknown keys."""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Limits of one rate key. None means 'not limited on that dimension' (unless adaptive)."""

    rpm: float | None = None
    """Requests per minute (the provider's published limit)."""
    tpm: float | None = None
    """Tokens per minute."""
    concurrency: int | None = None
    """Requests in flight at once (Jina's free keys allow 2)."""
    burst_slope: float | None = None
    """Ark-style: how fast the rate may rise, as a fraction per burst window (0.5 = +50 %)."""
    burst_floor_rps: float = 2.0
    """Below this rate the slope limit does not apply."""
    burst_window_s: float = 1.0
    burst_jitter_s: float = 0.05
    """How much earlier or later than admitted a request may reach the provider (dispatch,
    agent and network); the slope windows are widened by it so arrivals never break the rule."""
    adaptive: bool = True
    """Learn from 429s, Retry-After and x-ratelimit-* headers (never above the configured)."""
    safety: float = 0.98
    """Pace at this share of the limit: clocks and network jitter between us and the provider
    would otherwise turn exact pacing into occasional 429s."""
    burst_s: float = 0.5
    """Bucket depth in seconds of rate: how much may go out at once after an idle spell. Kept
    below the providers' usual one second so their bucket always has slack."""
    initial_rps: float = 5.0
    """Unknown request limit: the rate to start from while learning (conservative)."""
    initial_concurrency: int = 8
    """The AIMD concurrency limit's start for a key with no configured rate or concurrency
    (a key with a configured rate starts at ``max_concurrency``: its buckets pace it)."""
    max_concurrency: int = 1024
    default_tokens: float = 1000.0
    """Tokens charged for a task that gives no estimate, until the key's mean is learned."""


DEFAULT_UNKNOWN = KeyLimits()
"""Unknown keys: no configured ceiling, adaptive from a conservative start."""


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    """Limits per key pattern (fnmatch, first match wins) plus the default for other keys."""

    patterns: tuple[tuple[str, KeyLimits], ...] = ()
    default: KeyLimits = field(default_factory=KeyLimits)

    def limits_for(self, key: str) -> KeyLimits:
        for pattern, limits in self.patterns:
            if fnmatch.fnmatchcase(key, pattern):
                return limits
        return self.default

    @classmethod
    def from_toml(cls, path: Path) -> LimiterConfig:
        """Read ``[ratelimit.default]`` and ``[[ratelimit.keys]]`` (each with ``pattern``)."""
        with path.open("rb") as f:
            doc = tomllib.load(f)
        return cls.from_dict(doc.get("ratelimit", {}), where=str(path))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, where: str = "config") -> LimiterConfig:
        default = _limits(doc.get("default", {}), f"{where}: [ratelimit.default]")
        patterns = []
        for i, entry in enumerate(doc.get("keys", [])):
            place = f"{where}: [[ratelimit.keys]] #{i + 1}"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("pattern"), str):
                raise ValueError(f"{place} needs a string 'pattern' such as \"llm/my-key/*\"")
            rest = {k: v for k, v in entry.items() if k != "pattern"}
            patterns.append((entry["pattern"], _limits(rest, place)))
        return cls(tuple(patterns), default)


_FIELDS = {f.name: f for f in fields(KeyLimits)}


def _limits(values: Mapping[str, Any], place: str) -> KeyLimits:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"{place}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}"
        )
    for name, value in values.items():
        if name == "adaptive":
            if not isinstance(value, bool):
                raise ValueError(f"{place}: 'adaptive' must be true or false")
        elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{place}: {name!r} must be a non-negative number, got {value!r}")
        elif name in ("rpm", "tpm", "concurrency") and value == 0:
            raise ValueError(
                f"{place}: {name!r} must be at least 1 (leave it out for no limit), got 0"
            )
    return KeyLimits(**values)
