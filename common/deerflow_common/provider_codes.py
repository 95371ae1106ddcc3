"""What a provider's HTTP status and error code mean for recovery: one table for the agent's
provider handlers (which state the class of each failure) and the controller's classifier
(which infers it for handlers that report only signals, :mod:`deerflow_common.signals`).

The class follows from the first matching row (DeerFlow 2.0's error classes):

====  ==============================================================  ============
row   when                                                            class
====  ==============================================================  ============
1     the code is a content-safety refusal, and the status not 5xx    SOFT
2     the code is a quota or billing one (even on a 429)              FATAL
3     HTTP 401, 402 or 403 (authentication, payment, permission)      FATAL
4     HTTP 429, or a rate-limit code with no status                   RATE_LIMITED
5     HTTP 408, 409, 425 or 5xx                                       TRANSIENT
6     any other HTTP 4xx (the request is wrong for the provider)      FATAL
7     otherwise: no status and no known code say anything             None
====  ==============================================================  ============

Rows 1-3 are *refusals*: no retry, no wait and no other agent changes them. A safety refusal is
SOFT (skip the task: the same content meets the same refusal) and says nothing about the
provider's health; it may come with a 4xx or inside a 200 (Gemini's ``SAFETY`` block reason),
but a 5xx with such a code is the provider failing, so it is TRANSIENT. A quota or billing code
is FATAL whatever its status: waiting adds no credit, a person has to.

Codes compare case-insensitively. A burst-rate 429 (the request rate rose too fast) is
RATE_LIMITED like any 429; :func:`is_burst_rate` tells it apart for a smaller retry budget and a
longer delay.
"""

from __future__ import annotations

from .errors import ErrorClass

__all__ = [
    "BURST_RATE_CODES",
    "CONTENT_SAFETY_CODES",
    "QUOTA_CODES",
    "RATE_LIMIT_CODES",
    "is_burst_rate",
    "is_content_safety",
    "is_quota",
    "provider_class",
    "refusal_class",
    "status_class",
]


def _lowered(*codes: str) -> frozenset[str]:
    return frozenset(code.lower() for code in codes)


CONTENT_SAFETY_CODES = _lowered(
    "content_filter",  # OpenAI and Azure OpenAI: the prompt tripped the content filter
    "content_policy_violation",  # OpenAI images and moderation
    "responsible_ai_policy_violation",  # Azure OpenAI
    "SensitiveContentDetected",  # Volcengine Ark, and its Input/Output variants below
    "InputTextSensitiveContentDetected",
    "OutputTextSensitiveContentDetected",
    "InputImageSensitiveContentDetected",
    "DataInspectionFailed",  # DashScope: the input or output failed its inspection
    "data_inspection_failed",
    "SAFETY",  # Gemini's block or finish reason
)
"""Codes of a request refused for its content: never retried, no sign of the provider's health."""

QUOTA_CODES = _lowered(
    "insufficient_quota",  # OpenAI: out of credit (a 429 that no wait fixes)
    "billing_hard_limit_reached",
    "billing_not_active",
    "access_terminated",
    "QuotaExceeded",  # Volcengine Ark: the account's quota is used up
    "AccountOverdueError",  # Volcengine Ark: the account is overdue
    "Arrearage",  # DashScope: the account is in arrears
    "CommodityNotPurchased",  # Alibaba Cloud: the model service was never bought or activated
    "PrepaidBillOverdue",  # Alibaba Cloud: a bill is overdue, the service is suspended
    "PostpaidBillOverdue",
)
"""Codes that no wait fixes: credit, quota or a purchase has to be added by a person."""

BURST_RATE_CODES = _lowered("limit_burst_rate", "Throttling.BurstRate")
"""429 codes meaning the request rate rose too fast (Volcengine Ark, DashScope)."""

RATE_LIMIT_CODES = BURST_RATE_CODES | _lowered(
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
"""Codes of a rate limit, for handlers that report a code but no HTTP status."""

_REFUSING_STATUS = frozenset({401, 402, 403})
_TRANSIENT_STATUS = frozenset({408, 409, 425})


def _normal(code: str | None) -> str:
    return code.strip().lower() if code else ""


def is_content_safety(code: str | None) -> bool:
    """Whether ``code`` says the provider refused the content (a safety filter)."""
    return _normal(code) in CONTENT_SAFETY_CODES


def is_quota(code: str | None) -> bool:
    """Whether ``code`` says the account is out of quota or credit, or not paid for."""
    return _normal(code) in QUOTA_CODES


def is_burst_rate(code: str | None) -> bool:
    """Whether ``code`` says the request rate rose too fast (a burst-rate 429)."""
    return _normal(code) in BURST_RATE_CODES


def refusal_class(status: int | None, code: str | None) -> ErrorClass | None:
    """Rows 1-3 of the module's table: SOFT or FATAL when the provider refused for good, else
    None. These outrank anything else known about the failure."""
    if is_content_safety(code) and (status is None or status < 500):
        return ErrorClass.SOFT
    if is_quota(code) or status in _REFUSING_STATUS:
        return ErrorClass.FATAL
    return None


def status_class(status: int | None, code: str | None) -> ErrorClass | None:
    """Rows 4-7 of the module's table: the class the status (or, without one, a rate-limit
    code) alone gives, or None when they say nothing."""
    if status == 429 or (status is None and _normal(code) in RATE_LIMIT_CODES):
        return ErrorClass.RATE_LIMITED
    if status is None:
        return None
    if status in _TRANSIENT_STATUS or status >= 500:
        return ErrorClass.TRANSIENT
    if 400 <= status < 500:
        return ErrorClass.FATAL
    return None


def provider_class(status: int | None, code: str | None) -> ErrorClass | None:
    """The whole table: the class of a failed request by its HTTP status and provider code, or
    None when neither says anything. Pure; never raises."""
    refusal = refusal_class(status, code)
    return refusal if refusal is not None else status_class(status, code)
