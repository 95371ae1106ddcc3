"""An agent refused by its controller (a revoked join token, say) retries for as long as it
runs; its log says so once, then at most once a minute with a count, and again at once when the
refusal changes or follows a welcome (``deerflow_agent._refusals``). A fake clock."""

from __future__ import annotations

import logging

import pytest

from deerflow_agent._refusals import RefusalLog

REVOKED = "the join token sent is not valid here (unknown or revoked); ask the operator"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    caplog.clear()
    return out


@pytest.fixture
def clock(caplog: pytest.LogCaptureFixture) -> Clock:
    caplog.set_level(logging.DEBUG, logger="deerflow_agent")
    return Clock()


@pytest.fixture
def refusals(clock: Clock) -> RefusalLog:
    return RefusalLog(quiet_s=60, clock=clock)


def test_a_repeated_refusal_is_a_warning_once_then_once_a_minute_with_a_count(
    refusals: RefusalLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    refusals.refused("a1", "ctl:7400", "UNAUTHENTICATED", REVOKED)
    assert warnings(caplog) == [
        f"controller ctl:7400 did not welcome agent a1: UNAUTHENTICATED: {REVOKED}"
    ]
    for _ in range(11):  # every 5 s, the backoff's cap
        clock.now += 5
        refusals.refused("a1", "ctl:7400", "UNAUTHENTICATED", REVOKED)
    assert warnings(caplog) == []  # DEBUG only
    clock.now += 5
    refusals.refused("a1", "ctl:7400", "UNAUTHENTICATED", REVOKED)
    (reminder,) = warnings(caplog)
    assert "still refuses agent a1 (12 more times in the last 60 s)" in reminder
    assert REVOKED in reminder


def test_another_refusal_or_one_after_a_welcome_is_a_warning_at_once(
    refusals: RefusalLog, caplog: pytest.LogCaptureFixture
) -> None:
    refusals.refused("a1", "ctl:7400", "UNAUTHENTICATED", REVOKED)
    refusals.refused("a1", "ctl:7401", "UNAUTHENTICATED", REVOKED)  # another controller
    refusals.refused("a1", "ctl:7401", "UNAVAILABLE", "standby")  # another status
    refusals.welcomed()
    refusals.refused("a1", "ctl:7401", "UNAVAILABLE", "standby")  # new after the welcome
    assert len(warnings(caplog)) == 4
