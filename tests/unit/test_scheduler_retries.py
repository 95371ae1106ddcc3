"""Scheduler, driven with a fake clock: retries and attempt timeouts."""

from __future__ import annotations

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import (
    ErrorClass,
    ErrorKind,
    TaskError,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

from .scheduling import (
    JOB,
    assert_event_log_sound,
    assigned,
    error_of,
    fail,
    key,
    last_event,
    make,
    ok,
    retries,
    spec,
    trail,
)

# ----------------------------------------------------------------- retries


def test_a_failed_attempt_is_retried_after_a_jittered_backoff_and_not_before() -> None:
    s = make(recovery=retries(transient_base_s=0.2))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=3)], 0.0)
    s.take()

    s.finished("A", [fail("t", 1)], 1.0)

    out = s.take()
    assert out.assignments == {}
    assert out.touched_jobs == {JOB}
    retrying = last_event(job, "t")
    assert (retrying.state, retrying.attempt, retrying.agent_id) == (TaskState.RETRYING, 1, "A")
    assert retrying.error == TaskError(
        ErrorKind.HANDLER_ERROR, "boom", True, 0.0, ErrorClass.TRANSIENT
    )
    # Decorrelated jitter: the first delay is uniform between the base and three times it.
    not_before = retrying.not_before
    assert 1.2 <= not_before <= 1.6
    assert retrying.detail.startswith("transient HANDLER_ERROR; retry 1 of 3 in ")
    assert retrying.detail.endswith("s (decorrelated jitter)")
    assert job.tasks["t"].state == TaskState.QUEUED
    assert s.queued() == 0
    assert s.next_timer() == not_before

    s.tick(not_before - 0.001)
    assert s.take().assignments == {}

    s.tick(not_before)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    assert trail(job, "t") == [
        TaskState.QUEUED,
        TaskState.DISPATCHED,
        TaskState.RETRYING,
        TaskState.QUEUED,
        TaskState.DISPATCHED,
    ]
    assert job.tasks["t"].failures == 1
    assert s.counters.retries == 1
    assert_event_log_sound(job)


def test_each_retry_delay_is_at_most_three_times_the_last_and_under_the_cap() -> None:
    s = make(recovery=retries(transient_base_s=1.0, transient_cap_s=3.0))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=5)], 0.0)
    s.take()

    now, last = 0.0, 1.0
    for attempt in (1, 2, 3, 4):
        now += 10.0
        s.finished("A", [fail("t", attempt)], now)
        delay = last_event(job, "t").not_before - now
        assert 1.0 - 1e-9 <= delay <= min(3.0, 3 * last) + 1e-9, (attempt, delay)
        now, last = now + delay, delay
        s.tick(now)
        assert assigned(s.take()) == {"A": [key("t", attempt + 1)]}
    assert_event_log_sound(job)


def test_the_same_seed_gives_the_same_retry_times() -> None:
    def retry_time(seed: int) -> float:
        s = Scheduler(SchedulerConfig(), seed=seed)
        s.agent_joined("A", ["echo"], 1, 0.0)
        job = s.submit(JOB, "", [spec("t")], 0.0)
        s.finished("A", [fail("t", 1)], 1.0)
        return last_event(job, "t").not_before

    assert retry_time(42) == retry_time(42)
    assert retry_time(42) != retry_time(43)


def test_a_retry_after_longer_than_the_backoff_is_used_as_a_floor() -> None:
    s = make(recovery=retries(transient_base_s=0.2))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [fail("t", 1, "429 slow down", retry_after_s=5.0)], 1.0)

    assert last_event(job, "t").not_before == 6.0
    s.tick(5.999)
    assert s.take().assignments == {}
    s.tick(6.0)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    assert_event_log_sound(job)


def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    s = make(recovery=retries(transient_base_s=1.0))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [fail("t", 1, retry_after_s=0.01)], 1.0)

    assert 2.0 <= last_event(job, "t").not_before <= 4.0


# The tests that tick far ahead keep their job past the tick: a finished job is forgotten, its
# event log with it, once its retention (600 s by default) ends.
LONG_RETENTION_S = 10_000.0


def test_a_non_retryable_error_fails_the_task_at_once() -> None:
    s = make(job_retention_s=LONG_RETENTION_S)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=5)], 0.0)
    s.take()

    s.finished("A", [fail("t", 1, "payload is not JSON", retryable=False)], 1.0)

    assert trail(job, "t") == [TaskState.QUEUED, TaskState.DISPATCHED, TaskState.FAILED]
    failed = last_event(job, "t")
    assert (failed.attempt, failed.agent_id) == (1, "A")
    assert failed.error == TaskError(
        ErrorKind.HANDLER_ERROR, "payload is not JSON", False, 0.0, ErrorClass.FATAL
    )
    s.tick(1_000.0)
    assert s.take().assignments == {}
    assert s.counters.retries == 0
    assert_event_log_sound(job)


def test_a_task_that_exhausts_its_retries_fails_with_a_message_counting_the_attempts() -> None:
    s = make(job_retention_s=LONG_RETENTION_S)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=2)], 0.0)
    s.take()

    now = 0.0
    for attempt in (1, 2):
        now += 1.0
        s.finished("A", [fail("t", attempt)], now)
        now = last_event(job, "t").not_before
        s.tick(now)
        assert assigned(s.take()) == {"A": [key("t", attempt + 1)]}
    s.finished("A", [fail("t", 3)], now + 1.0)

    assert job.tasks["t"].state == TaskState.FAILED
    failed = last_event(job, "t")
    assert (failed.state, failed.attempt, failed.agent_id) == (TaskState.FAILED, 3, "A")
    assert failed.error is not None
    assert failed.error.kind == ErrorKind.HANDLER_ERROR
    assert failed.error.message == (
        "boom; gave up after 3 attempts: transient HANDLER_ERROR; gave up: retry budget of 2 used"
    )
    assert trail(job, "t").count(TaskState.RETRYING) == 2
    s.tick(now + 1_000.0)
    assert s.take().assignments == {}
    assert_event_log_sound(job)


def test_a_task_asking_for_the_default_retries_gets_the_configured_number() -> None:
    s = make(default_max_retries=1)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=-1)], 0.0)
    s.take()

    s.finished("A", [fail("t", 1)], 1.0)
    s.tick(last_event(job, "t").not_before)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    s.finished("A", [fail("t", 2)], 10.0)

    assert error_of(job, "t").message == (
        "boom; gave up after 2 attempts: transient HANDLER_ERROR; gave up: retry budget of 1 used"
    )
    assert_event_log_sound(job)


# ----------------------------------------------------------------- timeouts


def test_an_attempt_past_its_timeout_plus_grace_is_cancelled_on_its_agent_and_retried() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0, max_retries=1)], 0.0)
    s.take()
    s.started("A", [key("t", 1)], 0.0)
    s.take()

    s.tick(14.999)
    assert not s.take()

    s.tick(15.0)

    out = s.take()
    assert out.cancels == {"A": [key("t", 1)]}
    retrying = last_event(job, "t")
    assert (retrying.state, retrying.attempt, retrying.agent_id) == (TaskState.RETRYING, 1, "A")
    assert retrying.error == TaskError(
        ErrorKind.TIMEOUT,
        "attempt 1 on agent 'A' did not finish within 10 s (start-to-close)",
        True,
        0.0,
        ErrorClass.TIMEOUT,
    )
    assert retrying.not_before > 15.0
    s.finished("A", [AttemptResult(key("t", 1), ok=False, cancelled=True)], 15.01)
    s.tick(retrying.not_before)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    assert job.tasks["t"].failures == 1
    assert_event_log_sound(job)


def test_an_attempt_that_times_out_without_retries_left_ends_timed_out() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0, max_retries=0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()

    s.tick(15.0)

    assert s.take().cancels == {"A": [key("t", 1)]}
    assert trail(job, "t") == [
        TaskState.QUEUED,
        TaskState.DISPATCHED,
        TaskState.RUNNING,
        TaskState.TIMED_OUT,
    ]
    assert last_event(job, "t").error == TaskError(
        ErrorKind.TIMEOUT,
        "attempt 1 on agent 'A' did not finish within 10 s (start-to-close); "
        "gave up after 1 attempts: timeout TIMEOUT; gave up: retry budget of 0 used",
        False,
        0.0,
        ErrorClass.TIMEOUT,
    )
    assert s.counters.timed_out == 1
    assert_event_log_sound(job)


def test_a_task_without_a_timeout_gets_the_configured_default() -> None:
    s = make(default_timeout_s=60.0, timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()

    s.tick(64.999)
    assert s.take().cancels == {}
    s.tick(65.0)

    assert s.take().cancels == {"A": [key("t", 1)]}
    assert job.tasks["t"].state == TaskState.TIMED_OUT


def test_an_attempt_that_finished_in_time_is_never_timed_out() -> None:
    s = make(timeout_grace_s=5.0, job_retention_s=LONG_RETENTION_S)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0)], 0.0)
    s.take()
    s.finished("A", [ok("t", 1)], 5.0)
    events = len(job.events)

    s.tick(1_000.0)

    assert s.take().cancels == {}
    assert len(job.events) == events
    assert job.tasks["t"].state == TaskState.SUCCEEDED


def test_a_prefetched_attempt_is_timed_from_its_start_not_from_its_dispatch() -> None:
    # t2 waits in the agent's prefetch buffer for 9 s, then runs; start-to-close counts from
    # its start, so at dispatch + timeout + grace (15) it has run 6 s of its 10 s.
    s = make(prefetch=1, timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t1", timeout_s=10.0), spec("t2", timeout_s=10.0)], 0.0)
    assert assigned(s.take()) == {"A": [key("t1", 1), key("t2", 1)]}
    s.started("A", [key("t1", 1)], 0.0)
    s.finished("A", [ok("t1", 1)], 9.0)
    s.started("A", [key("t2", 1)], 9.0)

    s.tick(15.0)

    assert s.take().cancels == {}
    assert job.tasks["t2"].state == TaskState.RUNNING
    s.tick(24.0)
    assert s.take().cancels == {"A": [key("t2", 1)]}
    assert_event_log_sound(job)


def test_a_late_success_after_a_timeout_is_accepted_while_the_retry_waits() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()
    s.tick(15.0)
    not_before = last_event(job, "t").not_before
    s.take()

    s.finished("A", [ok("t", 1, b"just in time")], 15.01)

    done = last_event(job, "t")
    assert (done.state, done.attempt, done.agent_id, done.output) == (
        TaskState.SUCCEEDED,
        1,
        "A",
        b"just in time",
    )
    s.tick(not_before)
    assert s.take().assignments == {}
    assert_event_log_sound(job)


def test_a_result_after_the_final_timeout_is_ignored() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0, max_retries=0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()
    s.tick(15.0)

    s.finished("A", [ok("t", 1)], 16.0)

    assert job.tasks["t"].state == TaskState.TIMED_OUT
    assert job.tasks["t"].output == b""
    assert s.counters.stale_results == 1
    assert_event_log_sound(job)
