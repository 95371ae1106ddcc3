"""Provider signals a handler reports beside its result, and the controller's policies read.

Handlers put these keys in ``Result.metadata`` (strings on the wire, numbers as decimal text),
on success and on failure alike, so the rate limiter can learn from a 429 as well as from a
200. One vocabulary for every provider: handlers normalise their provider's headers into it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

HTTP_STATUS = "http.status"
"""The provider's HTTP status code, e.g. "200", "429"."""
RETRY_AFTER_S = "retry_after_s"
"""Seconds the provider asked us to wait (from retry-after-ms or retry-after)."""
ERROR_CODE = "error.code"
"""The provider's error code: "rate_limit_exceeded", "limit_burst_rate", "invalid_api_key"..."""
LATENCY_S = "latency_s"
"""Seconds from request sent to response read."""

LIMIT_REQUESTS = "ratelimit.limit_requests"
REMAINING_REQUESTS = "ratelimit.remaining_requests"
RESET_REQUESTS_S = "ratelimit.reset_requests_s"
LIMIT_TOKENS = "ratelimit.limit_tokens"
REMAINING_TOKENS = "ratelimit.remaining_tokens"
RESET_TOKENS_S = "ratelimit.reset_tokens_s"

PROMPT_TOKENS = "usage.prompt_tokens"
COMPLETION_TOKENS = "usage.completion_tokens"
TOTAL_TOKENS = "usage.total_tokens"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration_s(text: str) -> float | None:
    """Parse OpenAI-style reset durations ("12ms", "6m0s", "1.5s", "20") into seconds.

    A bare number is seconds. Returns None when the text is not a duration."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def number(metadata: Mapping[str, str], key: str) -> float | None:
    """The numeric value of ``key`` in ``metadata``, or None when absent or not a number."""
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
