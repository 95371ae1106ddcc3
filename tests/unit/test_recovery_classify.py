"""Error classification: the handler's own class wins, else kind and provider signals decide."""

from __future__ import annotations

import pytest

from deerflow_common import signals
from deerflow_common.errors import ErrorClass, ErrorKind, TaskError
from deerflow_controller.recovery import about_the_provider, classify, describe, is_burst_rate

T = ErrorClass.TRANSIENT
R = ErrorClass.RATE_LIMITED
F = ErrorClass.FATAL
TO = ErrorClass.TIMEOUT
S = ErrorClass.SOFT

HE = ErrorKind.HANDLER_ERROR


def _meta(status: int | None = None, code: str | None = None) -> dict[str, str]:
    meta = {}
    if status is not None:
        meta[signals.HTTP_STATUS] = str(status)
    if code is not None:
        meta[signals.ERROR_CODE] = code
    return meta


TABLE = [
    # (kind, retryable, status, code, expected)
    (HE, True, 408, None, T),
    (HE, True, 409, None, T),
    (HE, True, 425, None, T),
    (HE, True, 500, None, T),
    (HE, True, 502, None, T),
    (HE, True, 503, None, T),
    (HE, True, 429, None, R),
    (HE, True, 429, "rate_limit_exceeded", R),
    (HE, True, 429, "limit_burst_rate", R),
    (HE, True, None, "Throttling.RateQuota", R),
    (HE, True, None, None, T),  # a dropped stream or connection error: no status
    (ErrorKind.AGENT_LOST, True, None, None, T),
    (ErrorKind.FATAL, False, 401, "invalid_api_key", F),
    (ErrorKind.FATAL, False, 403, None, F),
    (HE, True, 402, None, F),
    (HE, True, 429, "insufficient_quota", F),  # no wait adds credit
    (ErrorKind.FATAL, False, 429, "Arrearage", F),
    (ErrorKind.FATAL, False, 400, None, F),
    (HE, True, 404, None, F),
    (HE, False, None, None, F),
    (HE, False, 503, None, F),  # the handler said permanent
    (ErrorKind.CIRCUIT_OPEN, False, None, None, T),
    (ErrorKind.UNKNOWN_HANDLER, False, None, None, F),
    (ErrorKind.SPLIT_ERROR, False, None, None, F),
    (ErrorKind.FATAL, False, 400, "content_filter", S),
    (ErrorKind.FATAL, False, 400, "OutputTextSensitiveContentDetected", S),
    (HE, True, None, "DataInspectionFailed", S),
    (ErrorKind.TIMEOUT, True, None, None, TO),
    (ErrorKind.HEARTBEAT_TIMEOUT, True, None, None, TO),
    (ErrorKind.SCHEDULE_TIMEOUT, False, None, None, TO),
    (ErrorKind.TIMEOUT, True, 504, None, TO),
]


@pytest.mark.parametrize(("kind", "retryable", "status", "code", "expected"), TABLE)
def test_errors_are_classified_by_kind_and_provider_signals(
    kind: ErrorKind, retryable: bool, status: int | None, code: str | None, expected: ErrorClass
) -> None:
    error = TaskError(kind, "boom", retryable)

    assert classify(error, _meta(status, code)) == expected


def test_the_handlers_own_class_is_trusted_over_the_signals() -> None:
    error = TaskError(HE, "refused", True, error_class=ErrorClass.SOFT)

    assert classify(error, _meta(503)) == ErrorClass.SOFT


def test_a_status_that_is_not_a_number_is_ignored() -> None:
    assert classify(TaskError(HE, "x", True), {signals.HTTP_STATUS: "teapot"}) == T


def test_a_burst_rate_429_is_told_apart_case_insensitively() -> None:
    assert is_burst_rate(_meta(429, "limit_burst_rate"))
    assert is_burst_rate(_meta(429, "Throttling.BurstRate"))
    assert not is_burst_rate(_meta(429, "rate_limit_exceeded"))
    assert not is_burst_rate({})


def test_failures_of_our_own_making_do_not_speak_about_the_provider() -> None:
    assert about_the_provider(TaskError(HE, "503", True))
    assert about_the_provider(TaskError(ErrorKind.TIMEOUT, "slow", True))
    assert about_the_provider(TaskError(ErrorKind.FATAL, "401"))
    assert not about_the_provider(TaskError(ErrorKind.AGENT_LOST, "gone", True))
    assert not about_the_provider(TaskError(ErrorKind.CIRCUIT_OPEN, "open"))
    assert not about_the_provider(TaskError(ErrorKind.SCHEDULE_TIMEOUT, "queued too long"))
    assert not about_the_provider(TaskError(ErrorKind.DEPENDENCY_FAILED, "dep"))


def test_describe_names_the_kind_status_and_code() -> None:
    assert describe(TaskError(HE, "x"), _meta(429, "limit_burst_rate")) == (
        "HANDLER_ERROR (HTTP 429, limit_burst_rate)"
    )
    assert describe(TaskError(ErrorKind.TIMEOUT, "x"), {}) == "TIMEOUT"
