"""A provider simulator for deerflow-parallel: OpenAI-compatible chat completions, Tavily-like
search and a Jina-like reader behind one aiohttp server, with each provider's rate limits
(RPM, TPM, concurrency, Ark's burst slope), latencies, sizes and failures.

    async with Simulator(SimConfig(keys={"k": KeyLimits(rpm=500, tpm=200_000)})) as sim:
        ...  # clients talk to sim.url; sim.stats() says what the providers saw
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Configuration
from .config import KeyLimits, Latencies, LatencyModel, SimConfig, parse_key_spec

# Limits (pure, clock-injected)
from .limits import BurstSlope, KeyLimiter, Limit, Permit, RateSnapshot, Throttled, TokenBucket

# Simulated time
from .state import Clock

if TYPE_CHECKING:
    # Server
    from .server import Simulator, build_app

    # Wire helpers
    from .wire import format_duration

# The aiohttp server is loaded on first use: `deerflow` registers `deerflow sim` from this
# package, and its other commands should not import aiohttp for it.
_LAZY = {"Simulator": "server", "build_app": "server", "format_duration": "wire"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BurstSlope",
    "Clock",
    "KeyLimiter",
    "KeyLimits",
    "Latencies",
    "LatencyModel",
    "Limit",
    "Permit",
    "RateSnapshot",
    "SimConfig",
    "Simulator",
    "Throttled",
    "TokenBucket",
    "build_app",
    "format_duration",
    "parse_key_spec",
]
