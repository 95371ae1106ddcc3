"""The agent's provider handlers and the controller's classifier speak one provider vocabulary:
each code they once disagreed on gets the same class from both, and the class it really means."""

from __future__ import annotations

import pytest

from deerflow_agent._provider import error_class
from deerflow_common import signals
from deerflow_common.errors import ErrorClass, ErrorKind, TaskError
from deerflow_controller.recovery import classify, is_burst_rate

DISPUTED = [
    # (status, code, what it means for a provider)
    (400, "CommodityNotPurchased", ErrorClass.FATAL),  # the service was never bought
    (403, "CommodityNotPurchased", ErrorClass.FATAL),
    (429, "CommodityNotPurchased", ErrorClass.FATAL),  # no wait buys it
    (400, "PrepaidBillOverdue", ErrorClass.FATAL),
    (429, "PrepaidBillOverdue", ErrorClass.FATAL),
    (429, "PostpaidBillOverdue", ErrorClass.FATAL),
    (400, "SAFETY", ErrorClass.SOFT),  # Gemini's block reason: the content, not the provider
    (400, "responsible_ai_policy_violation", ErrorClass.SOFT),
    (400, "InputImageSensitiveContentDetected", ErrorClass.SOFT),
    (403, "content_filter", ErrorClass.SOFT),  # the code says more than the status
    (500, "content_filter", ErrorClass.TRANSIENT),  # a 5xx is the provider failing
    (503, "SAFETY", ErrorClass.TRANSIENT),
    (429, "Throttling.BurstRate", ErrorClass.RATE_LIMITED),
]


def _controller_class(status: int, code: str) -> ErrorClass:
    """What the controller infers for a retryable handler error that reported only signals."""
    metadata = {signals.HTTP_STATUS: str(status), signals.ERROR_CODE: code}
    return classify(TaskError(ErrorKind.HANDLER_ERROR, "failed", retryable=True), metadata)


@pytest.mark.parametrize(("status", "code", "meaning"), DISPUTED)
def test_the_agent_and_the_controller_class_each_disputed_code_alike_and_as_it_means(
    status: int, code: str, meaning: ErrorClass
) -> None:
    assert (error_class(status, code), _controller_class(status, code)) == (meaning, meaning)


def test_a_content_safety_code_without_a_status_is_soft_for_the_controller() -> None:
    metadata = {signals.ERROR_CODE: "SAFETY"}

    assert classify(TaskError(ErrorKind.HANDLER_ERROR, "blocked", True), metadata) is (
        ErrorClass.SOFT
    )


def test_both_burst_rate_codes_are_told_apart_whatever_their_case() -> None:
    for code in ("limit_burst_rate", "Throttling.BurstRate", "THROTTLING.BURSTRATE"):
        assert is_burst_rate({signals.ERROR_CODE: code})
