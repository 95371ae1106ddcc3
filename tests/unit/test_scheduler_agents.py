"""Scheduler, driven with a fake clock: lost agents, stale results and cancellation."""

from __future__ import annotations

import pytest

from deerflow_controller.core.model import (
    ErrorClass,
    ErrorKind,
    Job,
    TaskError,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

from .scheduling import (
    JOB,
    assert_event_log_sound,
    assigned,
    error_of,
    events_of,
    fail,
    key,
    last_event,
    make,
    ok,
    spec,
    trail,
)

# ----------------------------------------------------------------- lost agents and stale results


def _task_lost_with_agent_a(max_retries: int = 3) -> tuple[Scheduler, Job]:
    """t ran on A (attempt 1); B joined idle; then A's stream ended at 3.0."""
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=max_retries)], 0.0)
    assert assigned(s.take()) == {"A": [key("t", 1)]}
    s.started("A", [key("t", 1)], 0.5)
    s.agent_joined("B", ["echo"], 1, 1.0)
    assert s.take().assignments == {}
    s.agent_left("A", 3.0)
    return s, job


def test_a_lost_agents_unfinished_attempt_counts_as_a_failure_and_goes_to_the_other_agent() -> None:
    s, job = _task_lost_with_agent_a()

    assert assigned(s.take()) == {"B": [key("t", 2)]}
    assert "A" not in s.agents
    lost = events_of(job, "t")[-3]
    assert (lost.state, lost.attempt, lost.agent_id, lost.not_before) == (
        TaskState.RETRYING,
        1,
        "A",
        3.0,
    )
    assert lost.error == TaskError(
        ErrorKind.AGENT_LOST,
        "agent 'A' disconnected during attempt 1",
        True,
        0.0,
        ErrorClass.TRANSIENT,
    )
    assert trail(job, "t")[-2:] == [TaskState.QUEUED, TaskState.DISPATCHED]
    assert last_event(job, "t").agent_id == "B"
    assert job.tasks["t"].failures == 1
    assert_event_log_sound(job)


def test_losing_an_agent_with_no_retries_left_fails_its_task() -> None:
    s, job = _task_lost_with_agent_a(max_retries=0)

    assert s.take().assignments == {}
    assert job.tasks["t"].state == TaskState.FAILED
    assert last_event(job, "t").error == TaskError(
        ErrorKind.AGENT_LOST,
        "agent 'A' disconnected during attempt 1; gave up after 1 attempts: transient "
        "AGENT_LOST; gave up: retry budget of 0 used",
        False,
        0.0,
        ErrorClass.TRANSIENT,
    )
    assert_event_log_sound(job)


def test_a_late_success_from_a_lost_attempt_is_accepted_once_and_the_newer_attempt_cancelled() -> (
    None
):
    s, job = _task_lost_with_agent_a()
    s.take()
    s.agent_joined("A", ["echo"], 1, 4.0, running=[key("t", 1)])
    out = s.take()
    assert out.cancels == {"A": [key("t", 1)]}
    assert out.assignments == {}

    s.finished("A", [ok("t", 1, b"from A")], 4.5)

    assert s.take().cancels == {"B": [key("t", 2)]}
    done = last_event(job, "t")
    assert (done.state, done.attempt, done.agent_id, done.output) == (
        TaskState.SUCCEEDED,
        1,
        "A",
        b"from A",
    )

    s.finished("B", [ok("t", 2, b"from B")], 5.0)

    assert job.tasks["t"].output == b"from A"
    assert [e.output for e in job.events if e.terminal] == [b"from A"]
    assert s.counters.succeeded == 1
    assert s.counters.stale_results == 1
    assert s.agents["B"].credit == 1
    assert_event_log_sound(job)


def test_a_failure_report_for_a_superseded_attempt_is_ignored() -> None:
    s, job = _task_lost_with_agent_a()
    s.take()
    s.agent_joined("A", ["echo"], 1, 4.0, running=[key("t", 1)])
    s.take()
    events = len(job.events)

    s.finished("A", [fail("t", 1)], 4.5)

    assert s.take().cancels == {}
    assert len(job.events) == events
    task = job.tasks["t"]
    assert (task.state, task.attempt, task.agent_id, task.failures) == (
        TaskState.DISPATCHED,
        2,
        "B",
        1,
    )
    assert s.counters.stale_results == 1
    assert_event_log_sound(job)


def test_a_duplicate_result_is_ignored() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [ok("t", 1, b"first")], 1.0)
    s.finished("A", [ok("t", 1, b"second"), fail("t", 1)], 2.0)

    assert trail(job, "t") == [TaskState.QUEUED, TaskState.DISPATCHED, TaskState.SUCCEEDED]
    assert job.tasks["t"].output == b"first"
    assert last_event(job, "t").output == b"first"
    assert s.counters.stale_results == 2
    assert s.counters.succeeded == 1
    assert_event_log_sound(job)


def test_a_duplicate_failure_report_counts_one_failure() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [fail("t", 1), fail("t", 1)], 1.0)

    assert job.tasks["t"].failures == 1
    assert trail(job, "t").count(TaskState.RETRYING) == 1
    assert s.counters.stale_results == 1


def test_a_result_for_an_unknown_job_is_counted_stale_and_changes_nothing() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.take()

    s.finished("A", [ok("t", 1, job_id="nope")], 1.0)

    assert not s.take()
    assert s.counters.stale_results == 1


# ----------------------------------------------------------------- cancellation


def test_cancelling_a_queued_task_removes_it_from_the_queue() -> None:
    s = make()
    job = s.submit(JOB, "", [spec("t1"), spec("t2")], 0.0)

    assert s.cancel(JOB, ["t1"], "user asked", 1.0) == 1

    assert s.queued() == 1
    cancelled = last_event(job, "t1")
    assert cancelled.state == TaskState.CANCELLED
    assert cancelled.error == TaskError(
        ErrorKind.CANCELLED_BY_CLIENT, "cancelled by client: user asked"
    )
    s.agent_joined("A", ["echo"], 4, 2.0)
    assert assigned(s.take()) == {"A": [key("t2", 1)]}
    assert s.counters.cancelled == 1
    assert_event_log_sound(job)


def test_cancelling_a_pending_task_fails_its_dependents_and_it_is_never_released() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 4, 0.0)
    job = s.submit(JOB, "", [spec("a"), spec("b", "a"), spec("c", "b")], 0.0)
    s.take()

    assert s.cancel(JOB, ["b"], "", 1.0) == 1

    assert error_of(job, "b") == TaskError(ErrorKind.CANCELLED_BY_CLIENT, "cancelled by client")
    assert error_of(job, "c") == TaskError(
        ErrorKind.DEPENDENCY_FAILED, "dependency 'b' ended CANCELLED: cancelled by client"
    )
    s.finished("A", [ok("a", 1)], 2.0)
    assert s.take().assignments == {}
    assert trail(job, "b") == [TaskState.PENDING, TaskState.CANCELLED]
    assert job.done
    assert_event_log_sound(job)


def test_cancelling_a_running_task_keeps_its_slot_until_the_agent_reports_the_end() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t1"), spec("t2")], 0.0)
    assert assigned(s.take()) == {"A": [key("t1", 1)]}
    s.started("A", [key("t1", 1)], 0.5)

    assert s.cancel(JOB, ["t1"], "user asked", 1.0) == 1

    out = s.take()
    assert out.cancels == {"A": [key("t1", 1)]}
    assert out.assignments == {}
    assert job.tasks["t1"].state == TaskState.CANCELLED
    assert s.agents["A"].credit == 0

    s.finished("A", [AttemptResult(key("t1", 1), ok=False, cancelled=True)], 1.5)

    assert assigned(s.take()) == {"A": [key("t2", 1)]}
    assert job.tasks["t1"].state == TaskState.CANCELLED
    assert_event_log_sound(job)


def test_a_success_reported_after_a_cancel_does_not_undo_it() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()
    s.cancel(JOB, ["t"], "", 1.0)

    s.finished("A", [ok("t", 1, b"too late")], 1.5)

    assert job.tasks["t"].state == TaskState.CANCELLED
    assert job.tasks["t"].output == b""
    assert s.counters.succeeded == 0
    assert_event_log_sound(job)


def test_cancelling_a_task_waiting_for_its_retry_stops_the_retry() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()
    s.finished("A", [fail("t", 1)], 1.0)
    not_before = last_event(job, "t").not_before

    assert s.cancel(JOB, ["t"], "", 1.01) == 1

    assert s.take().cancels == {}
    s.tick(not_before + 1.0)
    assert s.take().assignments == {}
    assert trail(job, "t") == [
        TaskState.QUEUED,
        TaskState.DISPATCHED,
        TaskState.RETRYING,
        TaskState.CANCELLED,
    ]
    assert_event_log_sound(job)


def test_cancel_with_an_unknown_task_id_raises_before_cancelling_anything() -> None:
    s = make()
    job = s.submit(JOB, "", [spec("t1"), spec("t2")], 0.0)

    with pytest.raises(KeyError):
        s.cancel(JOB, ["t1", "ghost"], "", 1.0)
    with pytest.raises(KeyError):
        s.cancel("ghost-job", None, "", 1.0)

    assert job.tasks["t1"].state == TaskState.QUEUED
    assert s.queued() == 2


def test_cancelling_a_finished_task_changes_nothing() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.finished("A", [ok("t", 1)], 1.0)
    s.take()

    assert s.cancel(JOB, None, "", 2.0) == 0

    assert not s.take()
    assert job.tasks["t"].state == TaskState.SUCCEEDED
    assert_event_log_sound(job)


def test_cancelling_a_whole_job_cancels_every_live_task_including_pending_dependents() -> None:
    # Whether a dependent ends CANCELLED must not depend on whether it was listed before or
    # after its dependency in the submitted job.
    s = make()
    job = s.submit(JOB, "", [spec("a"), spec("b", "a"), spec("c", "b")], 0.0)

    count = s.cancel(JOB, None, "", 1.0)

    states = {t.id: t.state for t in job.tasks.values()}
    assert states == {"a": TaskState.CANCELLED, "b": TaskState.CANCELLED, "c": TaskState.CANCELLED}
    assert {error_of(job, t).kind for t in states} == {ErrorKind.CANCELLED_BY_CLIENT}
    assert count == 3
    assert_event_log_sound(job)
