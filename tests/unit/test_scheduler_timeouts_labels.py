"""Scheduler: labels, schedule-to-start and heartbeat timeouts (Temporal's three timeouts), with a
fake clock. Each expiry must produce the right state, error kind and a message a person can act
on; the event log stays sound."""

from __future__ import annotations

from deerflow_controller.core.model import ErrorKind, TaskSpec, TaskState
from deerflow_controller.core.scheduler import AttemptResult, Scheduler
from deerflow_controller.recovery import RecoveryConfig, RetryConfig

from .scheduling import JOB, assert_event_log_sound, error_of, key, make, trail


def assigned_ids(sched: Scheduler) -> dict[str, list[str]]:
    return {a: [t.id for t in ts] for a, ts in sched.take().assignments.items()}


# ----------------------------------------------------------------- labels


def test_a_task_with_labels_goes_only_to_an_agent_carrying_them() -> None:
    sched = make()
    sched.agent_joined("plain", ["echo"], 4, 0.0)
    sched.agent_joined("gpu", ["echo"], 4, 0.0, labels={"gpu": "a100", "zone": "x"})
    sched.take()
    specs = [TaskSpec(f"t{i}", "echo", labels={"gpu": "a100"}) for i in range(3)]
    sched.submit(JOB, "j", specs, 1.0)
    assert assigned_ids(sched) == {"gpu": ["t0", "t1", "t2"]}


def test_unlabelled_and_labelled_tasks_share_the_priority_order() -> None:
    sched = make()
    sched.submit(
        JOB,
        "j",
        [
            TaskSpec("low", "echo", priority=0),
            TaskSpec("high", "echo", priority=5, labels={"zone": "x"}),
        ],
        0.0,
    )
    sched.agent_joined("a", ["echo"], 1, 0.0, labels={"zone": "x"})
    assert assigned_ids(sched) == {"a": ["high"]}


def test_labels_no_agent_carries_fail_after_the_membership_grace_with_a_reason() -> None:
    sched = make(unknown_handler_grace_s=2.0)
    sched.agent_joined("a", ["echo"], 1, 0.0, labels={"zone": "x"})
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", labels={"zone": "y"})], 0.5)
    assert trail(job, "t") == [TaskState.QUEUED]  # agents may still be joining
    sched.tick(2.0)
    assert trail(job, "t") == [TaskState.QUEUED, TaskState.FAILED]
    error = error_of(job, "t")
    assert error.kind == ErrorKind.UNKNOWN_HANDLER
    assert "zone=y" in error.message and "--label" in error.message
    assert_event_log_sound(job)


# ----------------------------------------------------------------- schedule-to-start


def test_schedule_to_start_expires_for_a_task_no_agent_takes() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 1, 0.0)
    job = sched.submit(
        JOB,
        "j",
        [TaskSpec("busy", "echo"), TaskSpec("waits", "echo", schedule_to_start_s=5.0)],
        0.0,
    )
    assert assigned_ids(sched) == {"a": ["busy"]}
    sched.tick(4.999)
    assert job.tasks["waits"].state == TaskState.QUEUED
    sched.tick(5.0)
    task = job.tasks["waits"]
    assert task.state == TaskState.TIMED_OUT
    error = error_of(job, "waits")
    assert error.kind == ErrorKind.SCHEDULE_TIMEOUT and not error.retryable
    assert "schedule-to-start" in error.message and "queued" in error.message
    assert sched.counters.schedule_timeouts == 1
    assert_event_log_sound(job)


def test_schedule_to_start_does_not_fire_once_the_attempt_started() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", schedule_to_start_s=1.0)], 0.0)
    sched.started("a", [key("t", 1)], 0.5)
    sched.tick(10.0)
    assert job.tasks["t"].state == TaskState.RUNNING
    assert sched.counters.schedule_timeouts == 0


def test_schedule_to_start_covers_an_attempt_waiting_unstarted_on_an_agent() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", schedule_to_start_s=1.0)], 0.0)
    sched.take()
    sched.tick(1.0)
    assert job.tasks["t"].state == TaskState.TIMED_OUT
    # The agent is told to drop the attempt; its slot stays counted until it reports.
    assert sched.take().cancels == {"a": [key("t", 1)]}
    assert sched.agents["a"].credit == 0
    sched.finished("a", [AttemptResult(key("t", 1), ok=False, cancelled=True)], 1.1)
    assert sched.agents["a"].credit == 1
    assert_event_log_sound(job)


def test_each_attempt_gets_its_own_schedule_to_start() -> None:
    sched = make(recovery=RecoveryConfig(retry=RetryConfig(transient_base_s=0.0)))
    sched.agent_joined("a", ["echo"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", schedule_to_start_s=2.0)], 0.0)
    sched.started("a", [key("t", 1)], 0.1)
    sched.agent_left("a", 3.0)  # the attempt is lost; the retry is scheduled anew at 3.0
    assert job.tasks["t"].state == TaskState.QUEUED
    sched.tick(4.9)
    assert trail(job, "t")[-1] == TaskState.QUEUED
    sched.tick(5.0)
    assert trail(job, "t")[-1] == TaskState.TIMED_OUT
    assert_event_log_sound(job)


# ----------------------------------------------------------------- heartbeat timeout


def test_a_running_attempt_without_progress_times_out_and_is_retried() -> None:
    sched = make(recovery=RecoveryConfig(retry=RetryConfig(transient_base_s=0.0)))
    sched.agent_joined("a", ["echo"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", heartbeat_timeout_s=3.0)], 0.0)
    sched.take()
    sched.started("a", [key("t", 1)], 1.0)
    sched.progress("a", [key("t", 1)], 3.5)
    sched.tick(4.0)  # the first check finds progress at 3.5: not due before 6.5
    assert job.tasks["t"].state == TaskState.RUNNING
    sched.tick(6.5)
    out = sched.take()
    assert out.cancels == {"a": [key("t", 1)]}
    assert trail(job, "t")[-3:] == [TaskState.RETRYING, TaskState.QUEUED, TaskState.DISPATCHED]
    retry = next(e for e in job.events if e.state == TaskState.RETRYING)
    assert retry.error is not None and retry.error.kind == ErrorKind.HEARTBEAT_TIMEOUT
    assert "ctx.progress()" in retry.error.message
    assert sched.counters.heartbeat_timeouts == 1
    assert job.tasks["t"].attempt == 2
    assert_event_log_sound(job)


def test_progress_from_another_agent_or_attempt_is_ignored() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 1, 0.0)
    sched.agent_joined("b", ["echo"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", heartbeat_timeout_s=1.0)], 0.0)
    (agent,) = assigned_ids(sched)
    other = "b" if agent == "a" else "a"
    sched.started(agent, [key("t", 1)], 0.0)
    sched.progress(other, [key("t", 1)], 0.9)
    sched.progress(agent, [key("t", 2)], 0.9)
    sched.tick(1.0)
    assert sched.counters.heartbeat_timeouts == 1
    assert job.tasks["t"].state == TaskState.QUEUED  # retried after a backoff


def test_a_task_without_heartbeat_timeout_is_never_checked() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", timeout_s=100.0)], 0.0)
    sched.started("a", [key("t", 1)], 0.0)
    sched.tick(99.0)
    assert job.tasks["t"].state == TaskState.RUNNING
    assert sched.counters.heartbeat_timeouts == 0


# ----------------------------------------------------------------- progress events


def test_progress_reports_reach_the_watchers_at_most_once_a_second_per_task() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 2, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo"), TaskSpec("u", "echo")], 0.0)
    sched.take()
    sched.started("a", [key("t", 1), key("u", 1)], 0.0)
    t, u = key("t", 1), key("u", 1)

    sched.progress("a", [t, u], 0.2, reports={t: (0.25, "a quarter"), u: (-1.0, "")})
    sched.progress("a", [t], 0.7, reports={t: (0.5, "held back: within a second")})
    sched.progress("a", [t], 1.2, reports={t: (0.75, "three quarters")})
    sched.progress("a", [key("t", 2)], 3.0, reports={key("t", 2): (0.9, "stale attempt")})

    said = [(e.task_id, e.progress, e.detail) for e in job.events if e.state == TaskState.PROGRESS]
    assert said == [("t", 0.25, "a quarter"), ("u", -1.0, ""), ("t", 0.75, "three quarters")]
    assert job.tasks["t"].state == TaskState.RUNNING and job.tasks["t"].progress_at == 1.2
    sched.finished("a", [AttemptResult(t, True, b"ok"), AttemptResult(u, True, b"ok")], 4.0)
    assert trail(job, "t")[-2:] == [TaskState.PROGRESS, TaskState.SUCCEEDED]
    assert_event_log_sound(job)


def test_progress_without_reports_only_restarts_the_heartbeat_timeout() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "echo", heartbeat_timeout_s=3.0)], 0.0)
    sched.take()
    sched.started("a", [key("t", 1)], 0.0)
    sched.progress("a", [key("t", 1)], 2.0)
    assert TaskState.PROGRESS not in trail(job, "t")
    assert job.tasks["t"].progress_at == 2.0
