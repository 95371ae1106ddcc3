"""Which of DeerFlow 2.0's error classes a failed attempt belongs to (docs/WORKLOAD.md).

A handler may state the class itself (``TaskError.error_class``); that is trusted. Otherwise the
class follows from the error's kind and the provider signals the handler reported beside it
(:mod:`deerflow_common.signals`), by the first matching row of this table:

====  =============================================================  ============
row   when                                                           class
====  =============================================================  ============
1     ``error.code`` is a content-safety rejection                   SOFT
2     ``error.code`` is a quota or billing code (even on a 429)      FATAL
3     HTTP 401, 402 or 403 (authentication, payment, permission)     FATAL
4     kind FATAL, UNKNOWN_HANDLER, SPLIT_ERROR, DEPENDENCY_FAILED or  FATAL
      CANCELLED_BY_CLIENT (retrying cannot change the answer)
5     kind HANDLER_ERROR that the handler marked not retryable       FATAL
6     kind TIMEOUT, HEARTBEAT_TIMEOUT or SCHEDULE_TIMEOUT            TIMEOUT
7     HTTP 429, or a rate-limit ``error.code`` with no status        RATE_LIMITED
8     HTTP 408, 409, 425 or 5xx                                      TRANSIENT
9     any other HTTP 4xx (the request is wrong for the provider)     FATAL
10    otherwise: an agent lost, a circuit that stayed open, a        TRANSIENT
      dropped stream, a handler's retryable error
====  =============================================================  ============

A burst-rate 429 (``limit_burst_rate``: the request rate rose too fast) is RATE_LIMITED like any
429; :func:`is_burst_rate` tells it apart so that the retry policy gives it a smaller budget and a
longer delay, as DeerFlow 2.0 does.

The code tables repeat the agent's (``deerflow_agent._provider``): the controller must not
import the agent, and a handler from a plugin may report codes the built-in ones never see.
"""

from __future__ import annotations

from collections.abc import Mapping

from deerflow_common import signals
from deerflow_common.errors import ErrorClass, ErrorKind, TaskError

__all__ = [
    "BURST_RATE_CODES",
    "CONTENT_SAFETY_CODES",
    "QUOTA_CODES",
    "RATE_LIMIT_CODES",
    "about_the_provider",
    "classify",
    "describe",
    "http_status",
    "is_burst_rate",
]

CONTENT_SAFETY_CODES = frozenset(
    code.lower()
    for code in (
        "content_filter",  # OpenAI / Azure OpenAI
        "content_policy_violation",  # OpenAI images and moderation
        "responsible_ai_policy_violation",  # Azure
        "SensitiveContentDetected",  # Volcengine Ark
        "InputTextSensitiveContentDetected",
        "OutputTextSensitiveContentDetected",
        "DataInspectionFailed",  # DashScope
        "data_inspection_failed",
        "SAFETY",  # Gemini's block reason
    )
)
"""Provider codes for a request refused for its content: skipped, never retried (same content,
same refusal) and no sign of the provider's health."""

QUOTA_CODES = frozenset(
    code.lower()
    for code in (
        "insufficient_quota",  # OpenAI: out of credit (a 429 that no wait fixes)
        "billing_hard_limit_reached",
        "billing_not_active",
        "access_terminated",
        "QuotaExceeded",  # Volcengine Ark: the account's quota is used up
        "AccountOverdueError",
        "Arrearage",  # DashScope: the account is in arrears
        "CommodityNotPurchased",
        "PrepaidBillOverdue",
        "PostpaidBillOverdue",
    )
)
"""Codes that no wait fixes: credit or quota has to be added by a person."""

BURST_RATE_CODES = frozenset(code.lower() for code in ("limit_burst_rate", "Throttling.BurstRate"))
"""429 codes meaning the request rate rose too fast (Volcengine Ark, DashScope)."""

RATE_LIMIT_CODES = BURST_RATE_CODES | frozenset(
    code.lower()
    for code in (
        "rate_limit_exceeded",
        "rate_limit_error",  # Anthropic's error type
        "limit_requests",
        "LimitRequests",
        "Throttling",
        "Throttling.RateQuota",
        "Throttling.Concurrency",
        "RequestBurstTooFast",
        "ResourceExhausted",
        "too_many_requests",
    )
)
"""Codes of a rate limit, for handlers that report a code but no HTTP status."""

_RETRYABLE_STATUS = frozenset({408, 409, 425})
_FATAL_STATUS = frozenset({401, 402, 403})
_FATAL_KINDS = frozenset(
    {
        ErrorKind.FATAL,
        ErrorKind.UNKNOWN_HANDLER,
        ErrorKind.SPLIT_ERROR,
        ErrorKind.DEPENDENCY_FAILED,
        ErrorKind.CANCELLED_BY_CLIENT,
    }
)
_TIMEOUT_KINDS = frozenset(
    {ErrorKind.TIMEOUT, ErrorKind.HEARTBEAT_TIMEOUT, ErrorKind.SCHEDULE_TIMEOUT}
)
_NOT_THE_PROVIDER = frozenset(
    {ErrorKind.AGENT_LOST, ErrorKind.CIRCUIT_OPEN, ErrorKind.SCHEDULE_TIMEOUT}
    | (_FATAL_KINDS - {ErrorKind.FATAL})
)


def http_status(metadata: Mapping[str, str]) -> int | None:
    """The provider's HTTP status from the signals, or None when absent or not a number."""
    status = signals.number(metadata, signals.HTTP_STATUS)
    return int(status) if status is not None else None


def _code(metadata: Mapping[str, str]) -> str:
    return metadata.get(signals.ERROR_CODE, "").strip().lower()


def is_burst_rate(metadata: Mapping[str, str]) -> bool:
    """Whether the provider said the request rate rose too fast (a burst-rate 429)."""
    return _code(metadata) in BURST_RATE_CODES


def classify(error: TaskError, metadata: Mapping[str, str]) -> ErrorClass:
    """The class of one failed attempt: the handler's own when it set one, else the first
    matching row of the module's table. Pure; never raises."""
    if error.error_class != ErrorClass.UNSPECIFIED:
        return error.error_class
    code = _code(metadata)
    status = http_status(metadata)
    kind = error.kind
    if code in CONTENT_SAFETY_CODES:
        return ErrorClass.SOFT
    if code in QUOTA_CODES or status in _FATAL_STATUS or kind in _FATAL_KINDS:
        return ErrorClass.FATAL
    if kind == ErrorKind.HANDLER_ERROR and not error.retryable:
        return ErrorClass.FATAL  # "retryable=False makes it permanent" (HandlerError)
    if kind in _TIMEOUT_KINDS:
        return ErrorClass.TIMEOUT
    if status == 429 or (status is None and code in RATE_LIMIT_CODES):
        return ErrorClass.RATE_LIMITED
    if status is not None and (status in _RETRYABLE_STATUS or status >= 500):
        return ErrorClass.TRANSIENT
    if status is not None and 400 <= status < 500:
        return ErrorClass.FATAL
    return ErrorClass.TRANSIENT


def about_the_provider(error: TaskError) -> bool:
    """Whether the failure says something about the provider or handler behind a circuit.

    False for failures of our own making (an agent lost, a circuit that stayed open, a queue
    that never reached an agent) and of the task's (bad input, a failed dependency): feeding
    those to a circuit breaker would open it for reasons no probe can test."""
    return error.kind not in _NOT_THE_PROVIDER


def describe(error: TaskError, metadata: Mapping[str, str]) -> str:
    """The error's kind and signals in a few words, for reasons: 'HANDLER_ERROR (HTTP 429,
    limit_burst_rate)'."""
    parts = []
    status = http_status(metadata)
    if status is not None:
        parts.append(f"HTTP {status}")
    code = metadata.get(signals.ERROR_CODE, "").strip()
    if code:
        parts.append(code)
    name = error.kind.name
    return f"{name} ({', '.join(parts)})" if parts else name
