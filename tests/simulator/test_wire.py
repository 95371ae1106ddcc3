"""Header formats the handlers will parse."""

from __future__ import annotations

import pytest

from deerflow_common.signals import parse_duration_s
from deerflow_simulator import format_duration
from deerflow_simulator.wire import retry_after_headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.012, "12ms"), (0.0004, "1ms"), (1.2, "1.2s"), (360.0, "6m0s"),
     (3723.5, "1h2m3.5s")],
)  # fmt: skip
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.0, 0.012, 0.5, 1.25, 59.5, 61.0, 360.0, 3723.5])
def test_durations_read_back_with_the_signal_parser(seconds: float) -> None:
    parsed = parse_duration_s(format_duration(seconds))
    assert parsed == pytest.approx(seconds, abs=1e-3)


def test_retry_after_rounds_up_to_whole_seconds_and_milliseconds() -> None:
    assert retry_after_headers(0.0123) == {"retry-after": "1", "retry-after-ms": "13"}
    assert retry_after_headers(12.1) == {"retry-after": "13", "retry-after-ms": "12100"}
    assert retry_after_headers(2.5, with_ms=False) == {"retry-after": "3"}
