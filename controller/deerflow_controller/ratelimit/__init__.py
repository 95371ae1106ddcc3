"""Cluster-wide adaptive rate limiting: per-key budgets enforced in the controller.

The algorithms that adapt a key's limits (``algorithms``) are separate from the gate that
enforces them (``gate``) and from the primitives they use (``buckets``)."""

from deerflow_controller.ratelimit.algorithms import AimdConcurrency, RateLearner
from deerflow_controller.ratelimit.buckets import SlopeWindow, TokenBucket
from deerflow_controller.ratelimit.limiter import KeyGate, KeyStats, RateLimiter
from deerflow_controller.ratelimit.limits import DEFAULT_UNKNOWN, KeyLimits, LimiterConfig

__all__ = [
    "DEFAULT_UNKNOWN",
    "AimdConcurrency",
    "KeyGate",
    "KeyLimits",
    "KeyStats",
    "LimiterConfig",
    "RateLearner",
    "RateLimiter",
    "SlopeWindow",
    "TokenBucket",
]
