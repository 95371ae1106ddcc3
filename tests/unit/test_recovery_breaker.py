"""Circuit breakers: open on failures correlated across tasks, one half-open probe, growing
cool-downs. Driven with a float clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deerflow_common.errors import ErrorClass
from deerflow_controller.recovery import (
    BreakerConfig,
    CircuitBreakers,
    CircuitState,
    CircuitTransition,
    handler_key,
)

T = ErrorClass.TRANSIENT
KEY = "llm:openai"
CFG = BreakerConfig(
    window_s=10.0,
    min_failures=4,
    min_tasks=3,
    failure_ratio=0.5,
    open_s=5.0,
    open_factor=2.0,
    open_max_s=12.0,
    stable_s=60.0,
    probe_timeout_s=30.0,
)


def _trip(b: CircuitBreakers, now: float, key: str = KEY) -> CircuitTransition:
    """Four failures from four tasks: enough to open a closed circuit under CFG."""
    out = None
    for i in range(4):
        out = b.record_failure(key, f"t{i}", T, now)
    assert out is not None
    return out


def test_failures_correlated_across_tasks_open_the_circuit_with_the_numbers() -> None:
    b = CircuitBreakers(CFG)
    b.record_success(KEY, "ok1", 0.0)
    assert b.record_failure(KEY, "a", T, 1.0) is None
    assert b.record_failure(KEY, "b", T, 1.0) is None
    assert b.record_failure(KEY, "c", T, 2.0) is None

    opened = b.record_failure(KEY, "a", T, 3.0)

    assert opened is not None
    assert (opened.old, opened.new) == (CircuitState.CLOSED, CircuitState.OPEN)
    assert (opened.failures, opened.total, opened.tasks, opened.trips) == (4, 5, 3, 1)
    assert opened.until == 8.0
    assert opened.reason == (
        "circuit llm:openai opened: 4 of 5 attempts failed (80 %) from 3 tasks within 10 s "
        "(thresholds: 4 failures, 3 tasks, 50 %); a probe may go through in 5 s (trip 1 in a row)"
    )
    assert b.state(KEY, 3.0) == CircuitState.OPEN
    assert not b.allow(KEY, 3.0)


def test_many_failures_of_one_task_do_not_open_it() -> None:
    b = CircuitBreakers(CFG)
    for i in range(20):
        assert b.record_failure(KEY, "poisoned", T, float(i) * 0.1) is None
    assert b.record_failure(KEY, "other", T, 2.0) is None

    assert b.state(KEY, 2.0) == CircuitState.CLOSED
    assert b.allow(KEY, 2.0)


def test_a_low_failure_ratio_does_not_open_it() -> None:
    b = CircuitBreakers(CFG)
    for i in range(10):
        b.record_success(KEY, f"s{i}", 0.0)
    for i in range(4):
        assert b.record_failure(KEY, f"t{i}", T, 1.0) is None  # 4 of 14: below 50 %

    assert b.state(KEY, 1.0) == CircuitState.CLOSED


def test_failures_older_than_the_window_are_forgotten() -> None:
    b = CircuitBreakers(CFG)
    for i in range(3):
        b.record_failure(KEY, f"old{i}", T, 0.0)

    assert b.record_failure(KEY, "new", T, 10.5) is None
    assert b.snapshot()[KEY].failures == 1


def test_rate_limited_fatal_and_soft_failures_never_count() -> None:
    b = CircuitBreakers(CFG)
    for cls in (ErrorClass.RATE_LIMITED, ErrorClass.FATAL, ErrorClass.SOFT):
        for i in range(10):
            assert b.record_failure(KEY, f"{cls.name}{i}", cls, 1.0) is None

    assert b.state(KEY, 1.0) == CircuitState.CLOSED
    assert KEY not in b.snapshot()


def test_timeouts_count_like_transient_failures() -> None:
    b = CircuitBreakers(CFG)
    out = None
    for i in range(4):
        out = b.record_failure(handler_key("crawl"), f"t{i}", ErrorClass.TIMEOUT, 1.0)

    assert out is not None and out.key == "handler:crawl"


def test_half_open_admits_exactly_one_probe_whose_success_closes_it() -> None:
    b = CircuitBreakers(CFG)
    _trip(b, 0.0)
    assert b.next_change(0.0) == 5.0
    assert not b.allow(KEY, 4.9)

    half = b.advance(5.0)

    assert [(t.old, t.new) for t in half] == [(CircuitState.OPEN, CircuitState.HALF_OPEN)]
    assert b.allow(KEY, 5.0, "probe")
    assert not b.allow(KEY, 5.0, "second")
    assert not b.allow(KEY, 6.0, "third")
    # Other tasks' outcomes (dispatched before the trip) do not decide.
    assert b.record_success(KEY, "straggler", 6.0) is None
    assert b.record_failure(KEY, "straggler", T, 6.0) is None

    closed = b.record_success(KEY, "probe", 7.0)

    assert closed is not None
    assert (closed.old, closed.new) == (CircuitState.HALF_OPEN, CircuitState.CLOSED)
    assert closed.reason == "circuit llm:openai closed: the probe succeeded"
    assert b.allow(KEY, 7.0) and b.allow(KEY, 7.0)
    assert b.next_change(7.0) is None


def test_a_failed_probe_reopens_it_with_a_growing_capped_cool_down() -> None:
    b = CircuitBreakers(CFG)
    _trip(b, 0.0)
    cool_downs = []
    now = 0.0
    for _ in range(3):
        now = b.next_change(now) or 0.0
        b.advance(now)
        assert b.allow(KEY, now, "probe")
        reopened = b.record_failure(KEY, "probe", T, now + 1.0)
        assert reopened is not None
        assert (reopened.old, reopened.new) == (CircuitState.HALF_OPEN, CircuitState.OPEN)
        assert "reopened: the probe failed" in reopened.reason
        cool_downs.append(reopened.until - (now + 1.0))
        now += 1.0

    assert cool_downs == [10.0, 12.0, 12.0]  # 5 s, then doubling, capped at 12 s
    assert b.snapshot()[KEY].trips == 4


def test_a_trip_after_a_stable_spell_starts_the_cool_down_afresh() -> None:
    b = CircuitBreakers(CFG)
    _trip(b, 0.0)
    b.advance(5.0)
    b.allow(KEY, 5.0, "p")
    b.record_failure(KEY, "p", T, 5.0)  # streak 2: 10 s
    b.advance(15.0)
    b.allow(KEY, 15.0, "p2")
    b.record_success(KEY, "p2", 15.0)

    soon = _trip(b, 20.0)
    assert soon.until - 20.0 == 12.0  # third trip in a row: 20 s, capped at 12 s
    b.advance(32.0)
    b.allow(KEY, 32.0, "p3")
    b.record_success(KEY, "p3", 32.0)

    later = _trip(b, 32.0 + 61.0)
    assert later.until - 93.0 == 5.0


def test_a_probe_that_never_reports_makes_way_for_another() -> None:
    b = CircuitBreakers(CFG)
    _trip(b, 0.0)
    b.advance(5.0)
    assert b.allow(KEY, 5.0, "lost")
    assert b.next_change(5.0) == 35.0
    assert not b.allow(KEY, 34.0, "x")

    assert b.allow(KEY, 35.0, "next")
    closed = b.record_success(KEY, "next", 36.0)
    assert closed is not None and closed.new == CircuitState.CLOSED


def test_outcomes_reported_while_open_are_ignored() -> None:
    b = CircuitBreakers(CFG)
    _trip(b, 0.0)

    assert b.record_failure(KEY, "late", T, 1.0) is None
    assert b.record_success(KEY, "late", 1.0) is None
    assert b.state(KEY, 1.0) == CircuitState.OPEN
    assert b.next_change(1.0) == 5.0


def test_allow_all_takes_no_probe_when_another_key_refuses() -> None:
    b = CircuitBreakers(CFG)
    _trip(b, 0.0, "a")
    _trip(b, 0.0, "b")
    b.advance(5.0)  # both half-open
    assert b.allow("b", 5.0, "holder")  # b's probe is out

    assert b.allow_all(["a", "b"], 5.0, "t1") == "b"
    assert b.allow("a", 5.0, "t2")  # a's probe was not consumed by t1
    assert b.allow_all(["unknown", "c"], 5.0, "t3") is None


def test_state_changes_applied_lazily_are_still_reported_by_advance() -> None:
    b = CircuitBreakers(CFG)
    _trip(b, 0.0)

    assert b.state(KEY, 6.0) == CircuitState.HALF_OPEN
    transitions = b.advance(6.0)

    assert [t.new for t in transitions] == [CircuitState.HALF_OPEN]
    assert b.advance(6.0) == []


def test_snapshot_reports_state_and_trips_per_key() -> None:
    b = CircuitBreakers(CFG)
    b.record_success("quiet", "t", 0.0)
    _trip(b, 0.0)

    snap = b.snapshot()

    assert snap["quiet"].state == CircuitState.CLOSED and snap["quiet"].trips == 0
    assert snap[KEY].state == CircuitState.OPEN and snap[KEY].trips == 1
    assert snap[KEY].until == 5.0


def test_all_closed_tells_the_scheduler_when_it_may_skip_the_checks() -> None:
    b = CircuitBreakers(CFG)
    assert b.all_closed
    _trip(b, 0.0)
    assert not b.all_closed
    b.advance(5.0)
    assert not b.all_closed  # half-open still admits only a probe
    b.allow(KEY, 5.0, "p")
    b.record_success(KEY, "p", 5.5)
    assert b.all_closed


# A message of one agent's results at one instant: (key, task id, failed) in order.
_messages = st.lists(
    st.tuples(
        st.floats(0.0, 8.0),  # time since the previous message
        st.lists(
            st.tuples(st.sampled_from([KEY, "k2"]), st.sampled_from("abcdef"), st.booleans()),
            max_size=12,
        ),
    ),
    max_size=25,
)


def _circuits(b: CircuitBreakers) -> object:
    return {
        k: (c.state, list(c.outcomes), c.failures, dict(c.failing_tasks), c.trips, c.until)
        for k, c in b._circuits.items()
    }


@settings(max_examples=300, deadline=None)
@given(messages=_messages, max_events=st.sampled_from([3, 4096]))
def test_successes_recorded_together_are_recorded_as_one_by_one(
    messages: list[tuple[float, list[tuple[str, str, bool]]]], max_events: int
) -> None:
    """As the core feeds a result message: successes together (``record_successes``, only
    while every circuit is closed) before each failure and at the end; the circuits, their
    windows and every transition are those of recording each outcome in turn."""
    cfg = BreakerConfig(
        window_s=10.0, min_failures=2, min_tasks=2, failure_ratio=0.5, max_events=max_events
    )
    one, batched = CircuitBreakers(cfg), CircuitBreakers(cfg)
    seen_one: list[object] = []
    seen_batched: list[object] = []
    now = 0.0

    def flush(pending: list[tuple[str, str]]) -> None:
        if batched.all_closed:
            for key in dict.fromkeys(k for k, _ in pending):
                batched.record_successes(key, [t for k, t in pending if k == key], now)
        else:
            for key, task_id in pending:
                seen_batched.append(batched.record_success(key, task_id, now))
        pending.clear()

    for dt, outcomes in messages:
        now += dt
        pending: list[tuple[str, str]] = []
        for key, task_id, failed in outcomes:
            if failed:
                flush(pending)
                seen_one.append(one.record_failure(key, task_id, T, now))
                seen_batched.append(batched.record_failure(key, task_id, T, now))
            else:
                pending.append((key, task_id))
                seen_one.append(one.record_success(key, task_id, now))
        flush(pending)
        assert _circuits(batched) == _circuits(one)
    assert [s for s in seen_batched if s is not None] == [s for s in seen_one if s is not None]
