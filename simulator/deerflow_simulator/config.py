"""The simulator's configuration: frozen dataclasses whose fields say their default and why.

Defaults come from docs/WORKLOAD.md. Build one in code, from a dict (``from_dict``) or
from a JSON file (``from_json``); the last two raise ``ValueError`` naming the bad field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeGuard

__all__ = ["KeyLimits", "Latencies", "LatencyModel", "SimConfig", "parse_key_spec"]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _finite(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _known_fields(cls: type, data: Mapping[str, Any], where: str) -> None:
    names = {f.name for f in fields(cls)}
    for name in data:
        _check(
            name in names,
            f"{where}: unknown field {name!r}; expected one of {', '.join(sorted(names))}",
        )


def _number(raw: object, where: str) -> float:
    if not _finite(raw):
        raise ValueError(f"{where} must be a number, not {raw!r}")
    return float(raw)


def _int(raw: object, where: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ValueError(f"{where} must be an integer, not {raw!r}")
    return raw


def _optional_int(raw: object, where: str) -> int | None:
    return None if raw is None else _int(raw, where)


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What one API key may do. ``None`` leaves that limit off.

    A key's limits apply across every endpoint it is used on: give each simulated provider its
    own key, as DeerFlow has one per provider."""

    rpm: float | None = None
    """Requests per minute, enforced as a token bucket refilling rpm/60 per second that holds
    max(1, rpm/60): one second of burst, as providers quantise their minute limits."""

    tpm: float | None = None
    """LLM tokens (prompt + completion) per minute, as a bucket refilling tpm/60 per second that
    holds one second of tokens; a single request larger than that passes on a full bucket and
    leaves it in debt."""

    concurrency: int | None = None
    """Requests in flight at once (Jina's free keys: 2)."""

    burst_slope: float | None = None
    """Volcengine Ark's rise limit: the request rate over the last ``burst_window_s`` may not
    exceed max(burst_floor_rps, (1 + burst_slope) x the rate over the window before it). 0.5
    lets the rate grow by half each window."""

    burst_floor_rps: float = 2.0
    """Rate always allowed by the burst limit, so an idle key can start."""

    burst_window_s: float = 1.0
    """Length of each of the two windows the burst limit compares."""

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "burst_slope"):
            value = getattr(self, name)
            _check(value is None or _finite(value), f"{name} must be a finite number or null")
        _check(self.rpm is None or self.rpm > 0, "rpm must be > 0 (or null for no limit)")
        _check(self.tpm is None or self.tpm > 0, "tpm must be > 0 (or null for no limit)")
        _check(
            self.concurrency is None or self.concurrency >= 1,
            "concurrency must be >= 1 (or null for no limit)",
        )
        _check(
            self.burst_slope is None or self.burst_slope >= 0,
            "burst_slope must be >= 0 (or null for no burst limit)",
        )
        _check(
            _finite(self.burst_window_s) and self.burst_window_s > 0, "burst_window_s must be > 0"
        )
        # Below one request per window an idle key could never send its first request.
        _check(
            _finite(self.burst_floor_rps) and self.burst_floor_rps * self.burst_window_s >= 1,
            "burst_floor_rps x burst_window_s must be >= 1 so an idle key can start",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "limits") -> KeyLimits:
        """Build from JSON-like data; unknown fields and wrong types raise ValueError."""
        _known_fields(cls, data, where)
        values: dict[str, Any] = {}
        for name, raw in data.items():
            if name == "concurrency":
                values[name] = _optional_int(raw, f"{where}.{name}")
            elif name in ("burst_floor_rps", "burst_window_s"):
                values[name] = _number(raw, f"{where}.{name}")
            else:
                values[name] = None if raw is None else _number(raw, f"{where}.{name}")
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, float | int | None]:
        """The JSON form ``from_dict`` reads back."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """A log-normal latency: half the requests take less than ``median_s``; ``sigma`` is the
    standard deviation of its logarithm (0.5 puts 95 % within x0.37..x2.7 of the median)."""

    median_s: float
    sigma: float

    def __post_init__(self) -> None:
        _check(_finite(self.median_s) and self.median_s >= 0, "median_s must be >= 0")
        _check(_finite(self.sigma) and self.sigma >= 0, "sigma must be >= 0")


@dataclass(frozen=True, slots=True)
class Latencies:
    """Per-endpoint latencies before ``SimConfig.time_scale`` (docs/WORKLOAD.md's table)."""

    llm_first_token: LatencyModel = LatencyModel(0.8, 0.6)
    """Time to first token of a chat completion."""

    llm_tokens_per_s: float = 50.0
    """Output speed; a completion takes first-token time + completion_tokens / this (30-80)."""

    search_basic: LatencyModel = LatencyModel(1.2, 0.5)
    search_advanced: LatencyModel = LatencyModel(3.0, 0.5)

    crawl: LatencyModel = LatencyModel(5.5, 0.7)
    """Jina reports a 7.9 s average; with sigma 0.7 about 20 % exceed 10 s, as measured."""

    def __post_init__(self) -> None:
        _check(
            _finite(self.llm_tokens_per_s) and self.llm_tokens_per_s > 0,
            "llm_tokens_per_s must be > 0",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "latencies") -> Latencies:
        _known_fields(cls, data, where)
        values: dict[str, Any] = {}
        for name, raw in data.items():
            path = f"{where}.{name}"
            if name == "llm_tokens_per_s":
                values[name] = _number(raw, path)
                continue
            _check(isinstance(raw, Mapping), f"{path} must be an object {{median_s, sigma}}")
            _known_fields(LatencyModel, raw, path)
            _check("median_s" in raw and "sigma" in raw, f"{path} needs median_s and sigma")
            try:
                values[name] = LatencyModel(
                    _number(raw["median_s"], f"{path}.median_s"),
                    _number(raw["sigma"], f"{path}.sigma"),
                )
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The whole simulator: its keys, how fast it answers and how often it fails."""

    keys: dict[str, KeyLimits] = field(default_factory=dict)
    """API key -> its limits. Any other key is refused with ``unknown_key_status``."""

    unknown_key_status: int = 401
    """Status for a missing or unknown key; 401 as OpenAI, Tavily and Jina answer."""

    time_scale: float = 1.0
    """Multiplies every latency; tests use 0.001-0.01 to run in milliseconds, 0 answers at once.
    Rate limits stay in real time."""

    error_rate: float = 0.0
    """Share of admitted requests answered 500, 502 or 503 (a brown-out raises it for a while)."""

    crawl_empty_rate: float = 0.15
    """Share of URLs the reader cannot extract (an empty 200 or a 422); docs/WORKLOAD.md: 10-25 %.
    Decided per URL, so the same URL fails the same way every time."""

    seed: int = 0
    """Seeds the latency, token and error draws and the per-query content, for reproducible runs."""

    latencies: Latencies = field(default_factory=Latencies)

    completion_median_tokens: float = 300.0
    """Median completion length; draws are clamped to 30..min(max_tokens, 5000)."""

    completion_sigma: float = 0.8
    """Log-normal sigma of completion lengths (most land within 30-5,000 tokens)."""

    def __post_init__(self) -> None:
        for key, limits in self.keys.items():
            _check(isinstance(key, str) and key != "", "API keys must be non-empty strings")
            _check(isinstance(limits, KeyLimits), f"keys[{key!r}] must be a KeyLimits")
        _check(
            400 <= self.unknown_key_status <= 499, "unknown_key_status must be a 4xx status code"
        )
        _check(_finite(self.time_scale) and self.time_scale >= 0, "time_scale must be >= 0")
        for name in ("error_rate", "crawl_empty_rate"):
            value = getattr(self, name)
            _check(_finite(value) and 0 <= value <= 1, f"{name} must be between 0 and 1")
        _check(
            _finite(self.completion_median_tokens) and self.completion_median_tokens >= 1,
            "completion_median_tokens must be >= 1",
        )
        _check(
            _finite(self.completion_sigma) and self.completion_sigma >= 0,
            "completion_sigma must be >= 0",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimConfig:
        """Build from JSON-like data, e.g. ``{"keys": {"k": {"rpm": 500}}, "time_scale": 0.1}``.

        Raises ValueError naming the first bad field."""
        _check(isinstance(data, Mapping), "the configuration must be a JSON object")
        _known_fields(cls, data, "config")
        values: dict[str, Any] = {}
        for name, raw in data.items():
            if name == "keys":
                _check(isinstance(raw, Mapping), "keys must be an object: API key -> limits")
                keys: dict[str, KeyLimits] = {}
                for key, limits in raw.items():
                    where = f"keys[{key!r}]"
                    _check(isinstance(limits, Mapping), f"{where} must be an object of limits")
                    keys[key] = KeyLimits.from_dict(limits, where)
                values[name] = keys
            elif name == "latencies":
                _check(isinstance(raw, Mapping), "latencies must be an object")
                values[name] = Latencies.from_dict(raw)
            elif name in ("unknown_key_status", "seed"):
                values[name] = _int(raw, name)
            else:
                values[name] = _number(raw, name)
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> SimConfig:
        """Read a JSON file; raises ValueError (with the path) when it is not valid."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"cannot read simulator config {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"simulator config {path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"simulator config {path}: {e}") from None


_SPEC_ALIASES = {
    "slope": "burst_slope",
    "floor": "burst_floor_rps",
    "window": "burst_window_s",
}


def parse_key_spec(spec: str) -> tuple[str, KeyLimits]:
    """Parse ``NAME=rpm:6000,tpm:2000000,concurrency:200,slope:0.5`` into a key and its limits.

    Fields: rpm, tpm, concurrency, slope (burst_slope), floor (burst_floor_rps), window
    (burst_window_s); a bare ``NAME`` is a key without limits. Raises ValueError."""
    name, _, rest = spec.partition("=")
    name = name.strip()
    _check(name != "", f"key spec {spec!r} has no key name (expected NAME=rpm:600,...)")
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        field_name, sep, raw = part.partition(":")
        _check(sep == ":", f"key spec {spec!r}: {part!r} is not field:value")
        field_name = _SPEC_ALIASES.get(field_name.strip(), field_name.strip())
        integer = field_name == "concurrency"
        try:
            values[field_name] = int(raw) if integer else float(raw)
        except ValueError:
            expected = "an integer" if integer else "a number"
            raise ValueError(f"key spec {spec!r}: {field_name} {raw!r} is not {expected}") from None
    try:
        return name, KeyLimits.from_dict(values, where=f"key spec {spec!r}")
    except ValueError as e:
        raise ValueError(str(e)) from None
