"""Which of DeerFlow 2.0's error classes a failed attempt belongs to (docs/WORKLOAD.md).

A handler may state the class itself (``TaskError.error_class``); that is trusted. Otherwise the
class follows from the error's kind and the provider signals the handler reported beside it
(:mod:`deerflow_common.signals`), by the first matching row of this table:

====  =============================================================  =============
row   when                                                           class
====  =============================================================  =============
1     the provider refused for good: a content-safety code (not on   SOFT; FATAL
      a 5xx); a quota or billing code, or HTTP 401, 402 or 403
2     kind FATAL, UNKNOWN_HANDLER, SPLIT_ERROR, DEPENDENCY_FAILED or  FATAL
      CANCELLED_BY_CLIENT (retrying cannot change the answer)
3     kind HANDLER_ERROR that the handler marked not retryable       FATAL
4     kind TIMEOUT, HEARTBEAT_TIMEOUT or SCHEDULE_TIMEOUT            TIMEOUT
5     HTTP 429, or a rate-limit code with no status;                 RATE_LIMITED;
      HTTP 408, 409, 425 or 5xx; any other HTTP 4xx                  TRANSIENT; FATAL
6     otherwise: an agent lost, a circuit that stayed open, a        TRANSIENT
      dropped stream, a handler's retryable error
====  =============================================================  =============

Rows 1 and 5 are :mod:`deerflow_common.provider_codes`' table (its refusals and its statuses),
the one the agent's provider handlers state their classes by, so both sides class a provider's
answer alike. A burst-rate 429 (``limit_burst_rate``: the request rate rose too fast) is
RATE_LIMITED like any 429; :func:`is_burst_rate` tells it apart so that the retry policy gives
it a smaller budget and a longer delay, as DeerFlow 2.0 does.
"""

from __future__ import annotations

from collections.abc import Mapping

from deerflow_common import provider_codes, signals
from deerflow_common.errors import ErrorClass, ErrorKind, TaskError

__all__ = ["about_the_provider", "classify", "describe", "http_status", "is_burst_rate"]

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


def is_burst_rate(metadata: Mapping[str, str]) -> bool:
    """Whether the provider said the request rate rose too fast (a burst-rate 429)."""
    return provider_codes.is_burst_rate(metadata.get(signals.ERROR_CODE))


def classify(error: TaskError, metadata: Mapping[str, str]) -> ErrorClass:
    """The class of one failed attempt: the handler's own when it set one, else the first
    matching row of the module's table. Pure; never raises."""
    if error.error_class != ErrorClass.UNSPECIFIED:
        return error.error_class
    code = metadata.get(signals.ERROR_CODE)
    status = http_status(metadata)
    refusal = provider_codes.refusal_class(status, code)
    if refusal is not None:
        return refusal
    kind = error.kind
    if kind in _FATAL_KINDS:
        return ErrorClass.FATAL
    if kind == ErrorKind.HANDLER_ERROR and not error.retryable:
        return ErrorClass.FATAL  # "retryable=False makes it permanent" (HandlerError)
    if kind in _TIMEOUT_KINDS:
        return ErrorClass.TIMEOUT
    by_status = provider_codes.status_class(status, code)
    return ErrorClass.TRANSIENT if by_status is None else by_status


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
