"""Which provider answers are retried, and how their headers become signals (pure functions)."""

from __future__ import annotations

import pytest

from deerflow_agent._http import response_signals, retry_after_s
from deerflow_agent._provider import is_retryable
from deerflow_common import signals


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status: int) -> None:
    assert is_retryable(status, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_client_errors_are_not_retryable(status: int) -> None:
    assert not is_retryable(status, None)


def test_a_burst_rate_429_is_retryable() -> None:
    assert is_retryable(429, "limit_burst_rate")


@pytest.mark.parametrize("code", ["insufficient_quota", "QuotaExceeded", "billing_not_active"])
def test_a_quota_or_billing_429_is_not_retryable(code: str) -> None:
    assert not is_retryable(429, code)


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5


def test_retry_after_in_seconds_is_used_without_retry_after_ms() -> None:
    assert retry_after_s({"retry-after": "7"}) == 7.0


def test_no_retry_after_is_none_rather_than_zero() -> None:
    assert retry_after_s({}) is None
    assert retry_after_s({"retry-after": "soon"}) is None


def test_rate_limit_headers_become_signals_with_resets_in_seconds() -> None:
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "150000",
        "x-ratelimit-reset-tokens": "6m0s",
        "retry-after-ms": "250",
    }

    assert response_signals(429, headers) == {
        signals.HTTP_STATUS: "429",
        signals.LIMIT_REQUESTS: "500",
        signals.REMAINING_REQUESTS: "499",
        signals.RESET_REQUESTS_S: "0.12",
        signals.LIMIT_TOKENS: "200000",
        signals.REMAINING_TOKENS: "150000",
        signals.RESET_TOKENS_S: "360",
        signals.RETRY_AFTER_S: "0.25",
    }


def test_rate_limit_headers_that_do_not_parse_are_left_out() -> None:
    headers = {"x-ratelimit-reset-requests": "whenever", "x-ratelimit-limit-requests": "lots"}

    assert response_signals(200, headers) == {signals.HTTP_STATUS: "200"}
