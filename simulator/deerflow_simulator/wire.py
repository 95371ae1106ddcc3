"""What goes on the wire: each provider's headers and error bodies, in its own dialect.

OpenAI (chat): ``{"error": {"message", "type", "code", "param"}}``, ``retry-after`` (whole
seconds, rounded up) and ``retry-after-ms`` on a 429, and ``x-ratelimit-*`` on every response.
Tavily (search): ``{"detail": {"error": "..."}}`` and no Retry-After, as Tavily documents none.
Jina reader: ``{"code", "name", "message"}`` and ``Retry-After`` on a 429.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from .limits import Limit, RateSnapshot, Throttled

__all__ = [
    "LIMIT_BURST_RATE",
    "RATE_LIMIT_EXCEEDED",
    "failure_message",
    "format_duration",
    "jina_error",
    "openai_error",
    "openai_failure",
    "openai_throttled",
    "ratelimit_headers",
    "retry_after_headers",
    "tavily_error",
    "throttled_message",
]

LIMIT_BURST_RATE = "limit_burst_rate"
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"

_OPENAI_TYPE = {
    Limit.RPM: "requests",
    Limit.BURST: "requests",
    Limit.TPM: "tokens",
    Limit.CONCURRENCY: "concurrency",
}

_FAILURE = {
    500: ("server_error", "internal_error", "The server had an error processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway: the upstream model server did not answer."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded."),
}


def format_duration(seconds: float) -> str:
    """OpenAI's reset duration: "12ms" under a second, "1.2s" under a minute, "6m0s", "1h2m3s".

    Readable by ``deerflow_common.signals.parse_duration_s``."""
    seconds = max(0.0, seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{_trim(seconds)}s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    head = f"{int(hours)}h" if hours else ""
    return f"{head}{int(minutes)}m{_trim(secs)}s"


def _trim(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def ratelimit_headers(snapshot: RateSnapshot) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the limits that are on."""
    headers: dict[str, str] = {}
    if snapshot.limit_requests is not None:
        headers["x-ratelimit-limit-requests"] = _count(snapshot.limit_requests)
        headers["x-ratelimit-remaining-requests"] = str(snapshot.remaining_requests)
        headers["x-ratelimit-reset-requests"] = format_duration(snapshot.reset_requests_s or 0.0)
    if snapshot.limit_tokens is not None:
        headers["x-ratelimit-limit-tokens"] = _count(snapshot.limit_tokens)
        headers["x-ratelimit-remaining-tokens"] = str(snapshot.remaining_tokens)
        headers["x-ratelimit-reset-tokens"] = format_duration(snapshot.reset_tokens_s or 0.0)
    return headers


def _count(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def retry_after_headers(seconds: float, *, with_ms: bool = True) -> dict[str, str]:
    """``retry-after`` in whole seconds rounded up (at least 1) and, for OpenAI,
    ``retry-after-ms`` in milliseconds rounded up."""
    headers = {"retry-after": str(max(1, math.ceil(seconds)))}
    if with_ms:
        headers["retry-after-ms"] = str(max(1, math.ceil(seconds * 1000)))
    return headers


def throttled_message(throttled: Throttled, what: str) -> str:
    """A sentence a person can act on: which limit, and when to try again."""
    wait = format_duration(throttled.retry_after_s)
    if throttled.limit is Limit.BURST:
        return (
            f"Request rate of {what} rose too fast (burst limit); "
            f"ramp up gradually and try again in {wait}."
        )
    if throttled.limit is Limit.CONCURRENCY:
        return f"Too many concurrent requests for {what}; try again in {wait}."
    unit = "requests" if throttled.limit is Limit.RPM else "tokens"
    return f"Rate limit reached for {unit} per minute of {what}. Please try again in {wait}."


def openai_error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style error response."""
    body = {"error": {"message": message, "type": type_, "code": code, "param": None}}
    return web.json_response(body, status=status, headers=headers)


def openai_throttled(throttled: Throttled, what: str, headers: dict[str, str]) -> web.Response:
    """OpenAI's 429: type requests/tokens/concurrency, code rate_limit_exceeded or
    limit_burst_rate (Volcengine Ark's), with retry-after and retry-after-ms."""
    code = LIMIT_BURST_RATE if throttled.limit is Limit.BURST else RATE_LIMIT_EXCEEDED
    return openai_error(
        429,
        throttled_message(throttled, what),
        type_=_OPENAI_TYPE[throttled.limit],
        code=code,
        headers={**headers, **retry_after_headers(throttled.retry_after_s)},
    )


def openai_failure(status: int, headers: dict[str, str]) -> web.Response:
    """A 500, 502 or 503 as OpenAI words them."""
    type_, code, message = _FAILURE[status]
    return openai_error(status, message, type_=type_, code=code, headers=headers)


def tavily_error(status: int, message: str) -> web.Response:
    """Tavily's error shape; never a Retry-After."""
    return web.json_response({"detail": {"error": message}}, status=status)


_JINA_NAMES = {
    400: "ParamValidationError",
    401: "AuthenticationRequiredError",
    422: "AssertionFailureError",
    429: "RateLimitTriggeredError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
}


def jina_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Jina reader's error shape: ``{"code", "name", "message"}``."""
    body: dict[str, Any] = {
        "data": None,
        "code": status,
        "name": _JINA_NAMES.get(status, "Error"),
        "message": message,
    }
    return web.json_response(body, status=status, headers=headers)


def failure_message(status: int) -> str:
    """The sentence of a simulated 5xx."""
    return _FAILURE[status][2]
