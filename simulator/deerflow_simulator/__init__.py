"""A provider simulator for deerflow-parallel: OpenAI-compatible chat completions, Tavily-like
search and a Jina-like reader behind one aiohttp server, with each provider's rate limits
(RPM, TPM, concurrency, Ark's burst slope), latencies, sizes and failures.

    async with Simulator(SimConfig(keys={"k": KeyLimits(rpm=500, tpm=200_000)})) as sim:
        ...  # clients talk to sim.url; sim.stats() says what the providers saw
"""

# Configuration
from .config import KeyLimits, Latencies, LatencyModel, SimConfig, parse_key_spec

# Limits (pure, clock-injected)
from .limits import BurstSlope, KeyLimiter, Limit, Permit, RateSnapshot, Throttled, TokenBucket

# Server
from .server import Simulator, build_app
from .state import Clock

# Wire helpers
from .wire import format_duration

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
