"""Retry decisions: decorrelated jitter, Retry-After as a floor, a budget per error class."""

from __future__ import annotations

import random

from deerflow_common import signals
from deerflow_common.errors import ErrorClass, ErrorKind, TaskError
from deerflow_controller.recovery import (
    Budget,
    RetryConfig,
    RetryDecision,
    RetryPolicy,
    RetryState,
    classify,
)

HE = ErrorKind.HANDLER_ERROR


def _fail(
    status: int, code: str | None = None, retry_after: float = 0.0
) -> tuple[TaskError, dict[str, str]]:
    meta = {signals.HTTP_STATUS: str(status)}
    if code:
        meta[signals.ERROR_CODE] = code
    return TaskError(HE, f"HTTP {status}", True, retry_after_s=retry_after), meta


def _decide(
    policy: RetryPolicy,
    state: RetryState,
    error: TaskError,
    meta: dict[str, str],
    rng: random.Random,
    max_retries: int = 3,
) -> RetryDecision:
    return policy.decide(
        state, error, classify(error, meta), meta, max_retries=max_retries, rng=rng
    )


def test_transient_errors_retry_with_decorrelated_jitter_then_give_up() -> None:
    policy = RetryPolicy()
    state = RetryState()
    rng, twin = random.Random(42), random.Random(42)
    error, meta = _fail(503)
    prev = 0.2
    for n in (1, 2, 3):
        decision = _decide(policy, state, error, meta, rng)
        expected = min(30.0, twin.uniform(0.2, prev * 3))
        assert decision.retry
        assert decision.delay_s == expected
        assert 0.2 <= decision.delay_s <= prev * 3
        assert decision.budget is Budget.TRANSIENT
        assert (decision.used, decision.limit) == (n, 3)
        prev = expected

    last = _decide(policy, state, error, meta, rng)

    assert not last.retry
    assert last.reason == ("transient HANDLER_ERROR (HTTP 503); gave up: retry budget of 3 used")


def test_the_reason_names_class_budget_and_delay() -> None:
    decision = _decide(RetryPolicy(), RetryState(), *_fail(503), random.Random(1))

    assert decision.reason == (
        f"transient HANDLER_ERROR (HTTP 503); retry 1 of 3 in {decision.delay_s:.2f} s "
        "(decorrelated jitter)"
    )


def test_jitter_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(RetryConfig(transient_base_s=1.0, transient_cap_s=4.0))
    state = RetryState()
    rng = random.Random(3)
    error, meta = _fail(500)
    delays = [_decide(policy, state, error, meta, rng, max_retries=50).delay_s for _ in range(15)]

    assert all(1.0 <= d <= 4.0 for d in delays)
    assert max(delays) == 4.0  # reached and held


def test_retry_after_is_a_floor_honoured_as_given_even_above_the_cap() -> None:
    policy = RetryPolicy()
    error, meta = _fail(429, "rate_limit_exceeded", retry_after=75.0)

    decision = _decide(policy, RetryState(), error, meta, random.Random(5))

    assert decision.retry
    assert decision.delay_s == 75.0
    assert "Retry-After 75 s" in decision.reason


def test_retry_after_from_the_signals_counts_when_the_error_has_none() -> None:
    error, meta = _fail(503)
    meta[signals.RETRY_AFTER_S] = "12"

    decision = _decide(RetryPolicy(), RetryState(), error, meta, random.Random(5))

    assert decision.delay_s == 12.0


def test_a_short_retry_after_leaves_the_jitter_in_charge() -> None:
    error, meta = _fail(429, retry_after=0.5)
    rng, twin = random.Random(9), random.Random(9)

    decision = _decide(RetryPolicy(), RetryState(), error, meta, rng)

    assert decision.delay_s == twin.uniform(1.0, 3.0)  # rate-limited base 1 s > 0.5 s


def test_a_retry_after_beyond_the_limit_gives_up() -> None:
    error, meta = _fail(429, retry_after=3600.0)

    decision = _decide(RetryPolicy(), RetryState(), error, meta, random.Random(1))

    assert not decision.retry
    assert "asked for a wait of 3600 s" in decision.reason


def test_rate_limited_errors_have_their_own_larger_budget_beyond_max_retries() -> None:
    policy = RetryPolicy()
    state = RetryState()
    rng = random.Random(0)
    error, meta = _fail(429, "rate_limit_exceeded")
    decisions = [_decide(policy, state, error, meta, rng, max_retries=0) for _ in range(9)]

    assert [d.retry for d in decisions] == [True] * 8 + [False]
    assert decisions[0].budget is Budget.RATE_LIMITED
    assert all(d.delay_s >= 1.0 for d in decisions[:8])


def test_burst_rate_429s_get_a_smaller_budget_and_a_longer_base_delay() -> None:
    policy = RetryPolicy()
    state = RetryState()
    rng = random.Random(0)
    error, meta = _fail(429, "limit_burst_rate")
    decisions = [_decide(policy, state, error, meta, rng) for _ in range(3)]

    assert [d.retry for d in decisions] == [True, True, False]
    assert decisions[0].budget is Budget.BURST_RATE
    assert 5.0 <= decisions[0].delay_s <= 15.0
    assert decisions[2].reason.startswith("burst-rate HANDLER_ERROR (HTTP 429, limit_burst_rate)")


def test_budgets_are_separate_per_class() -> None:
    policy = RetryPolicy()
    state = RetryState()
    rng = random.Random(0)
    transient = _fail(503)
    limited = _fail(429)
    for _ in range(3):
        assert _decide(policy, state, *transient, rng).retry
    # The transient budget is spent, the rate-limited one is not.
    assert _decide(policy, state, *limited, rng).retry
    assert not _decide(policy, state, *transient, rng).retry
    assert (state.transient, state.rate_limited) == (3, 1)


def test_timeouts_get_a_small_budget_bounded_by_max_retries() -> None:
    policy = RetryPolicy()
    error = TaskError(ErrorKind.TIMEOUT, "overran", True)
    rng = random.Random(0)
    state = RetryState()

    first = policy.decide(state, error, ErrorClass.TIMEOUT, {}, max_retries=3, rng=rng)
    second = policy.decide(state, error, ErrorClass.TIMEOUT, {}, max_retries=3, rng=rng)
    none = policy.decide(RetryState(), error, ErrorClass.TIMEOUT, {}, max_retries=0, rng=rng)

    assert (first.retry, first.budget, first.limit) == (True, Budget.TIMEOUT, 1)
    assert not second.retry
    assert not none.retry


def test_fatal_and_soft_errors_are_never_retried_and_draw_no_random_number() -> None:
    policy = RetryPolicy()
    rng = random.Random(0)
    before = rng.getstate()
    fatal = _decide(policy, RetryState(), *_fail(401, "invalid_api_key"), rng)
    soft = _decide(policy, RetryState(), *_fail(400, "content_filter"), rng)

    assert not fatal.retry and fatal.budget is Budget.FATAL
    assert not soft.retry and soft.budget is Budget.SOFT
    assert "refused the content" in soft.reason
    assert rng.getstate() == before


def test_a_lost_agent_is_retried_at_once_on_the_transient_budget() -> None:
    error = TaskError(ErrorKind.AGENT_LOST, "agent gone", True)

    decision = RetryPolicy().decide(
        RetryState(), error, ErrorClass.TRANSIENT, {}, max_retries=3, rng=random.Random(0)
    )

    assert decision.retry and decision.delay_s == 0.0
    assert decision.budget is Budget.TRANSIENT
    assert (
        decision.reason == "transient AGENT_LOST; retry 1 of 3 in 0 s (at once, on another agent)"
    )


def test_schedule_timeouts_and_open_circuits_are_final() -> None:
    policy = RetryPolicy()
    for kind in (ErrorKind.SCHEDULE_TIMEOUT, ErrorKind.CIRCUIT_OPEN):
        error = TaskError(kind, "waited", True)
        decision = policy.decide(
            RetryState(), error, classify(error, {}), {}, max_retries=3, rng=random.Random(0)
        )
        assert not decision.retry, kind


def test_max_attempts_caps_all_classes_together() -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=4))
    state = RetryState()
    rng = random.Random(0)
    kinds = [_fail(503), _fail(429), _fail(503), _fail(429)]
    decisions = [_decide(policy, state, *k, rng) for k in kinds]

    assert [d.retry for d in decisions] == [True, True, True, False]
    assert "gave up after 4 attempts" in decisions[3].reason
