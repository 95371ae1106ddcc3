"""Scheduler restore (issue #3): a new leader rebuilds jobs from the journal, holds unfinished
tasks while known agents reconnect, adopts the attempts they still run, then releases the rest.
Driven with a fake clock, like every core test."""

from __future__ import annotations

from deerflow_controller.core.model import ErrorKind, Job, TaskError, TaskState
from deerflow_controller.core.scheduler import AttemptResult, RestoredJob, RestoredResult

from .scheduling import JOB, assert_event_log_sound, key, make, spec, trail


def state(job: Job, task_id: str) -> TaskState:
    """A task's state now (a call, so that type narrowing does not carry over between asserts)."""
    return job.tasks[task_id].state


def test_restored_finished_tasks_are_terminal_once_and_release_their_dependents() -> None:
    s = make()
    job = s.restore_job(
        RestoredJob(
            JOB,
            "n",
            [spec("a"), spec("b", "a"), spec("c", "b")],
            {"a": RestoredResult(TaskState.SUCCEEDED, b"out-a", attempt=2, agent_id="x")},
        ),
        10.0,
    )
    assert job.tasks["a"].state == TaskState.SUCCEEDED
    assert job.tasks["a"].output == b"out-a"
    assert job.tasks["b"].state == TaskState.QUEUED  # held: ready, but not dispatched yet
    assert job.tasks["c"].state == TaskState.PENDING
    assert s.restored_waiting() == 1
    s.agent_joined("ag", ["echo"], 4, 10.0)
    assert s.take().assignments == {}  # nothing leaves during the reconnect grace
    assert s.release_restored(11.0) == 1
    out = s.take()
    assert [t.id for t in out.assignments["ag"]] == ["b"]
    s.finished("ag", [AttemptResult(key("b", 1), ok=True, output=b"ok")], 12.0)
    assert [t.id for t in s.take().assignments["ag"]] == ["c"]
    assert job.remaining == 1
    assert_event_log_sound(job)


def test_a_reconnecting_agent_keeps_the_attempt_it_still_runs() -> None:
    s = make()
    job = s.restore_job(RestoredJob(JOB, "", [spec("a"), spec("b")], {}), 0.0)
    # The agent ran attempt 3 of "a" for the old leader and says so in its Hello.
    s.adopt_restored([key("a", 3)], 1.0)
    s.agent_joined("ag", ["echo"], 4, 1.0, running=[key("a", 3)])
    out = s.take()
    assert out.cancels == {}
    assert state(job, "a") == TaskState.RUNNING
    assert job.tasks["a"].attempt == 3
    s.release_restored(2.0)
    assert [t.id for t in s.take().assignments["ag"]] == ["b"]
    # The adopted attempt keeps a full start-to-close: a tick now times nothing out.
    s.tick(3.0)
    assert state(job, "a") == TaskState.RUNNING
    s.finished("ag", [AttemptResult(key("a", 3), ok=True, output=b"x")], 4.0)
    assert job.tasks["a"].state == TaskState.SUCCEEDED
    assert trail(job, "a") == [TaskState.RUNNING, TaskState.SUCCEEDED]
    assert_event_log_sound(job)


def test_a_result_buffered_across_the_failover_finishes_a_held_task() -> None:
    s = make()
    job = s.restore_job(RestoredJob(JOB, "", [spec("a")], {}), 0.0)
    s.agent_joined("ag", ["echo"], 4, 1.0)
    s.finished("ag", [AttemptResult(key("a", 5), ok=True, output=b"late")], 1.5)
    assert job.tasks["a"].state == TaskState.SUCCEEDED
    assert s.release_restored(2.0) == 0
    assert s.take().assignments == {}
    assert_event_log_sound(job)


def test_a_journaled_failure_fails_dependents_that_were_not_journaled_yet() -> None:
    s = make()
    error = TaskError(ErrorKind.HANDLER_ERROR, "boom")
    job = s.restore_job(
        RestoredJob(
            JOB,
            "",
            [spec("a"), spec("b", "a")],
            {"a": RestoredResult(TaskState.FAILED, error=error, attempt=4)},
        ),
        0.0,
    )
    assert job.tasks["b"].state == TaskState.FAILED
    assert job.done
    assert s.restored_waiting() == 0
    assert_event_log_sound(job)


def test_restoring_a_known_job_changes_nothing() -> None:
    s = make()
    first = s.submit(JOB, "", [spec("a")], 0.0)
    again = s.restore_job(RestoredJob(JOB, "", [spec("a")], {}), 1.0)
    assert again is first
    assert s.restored_waiting() == 0
