"""Schedule-to-close (per task, across all attempts) and the job deadline: past them, unfinished
tasks end TIMED_OUT with a reason naming the timeout, attempts still on agents are cancelled
there, dependents fail, and every task has exactly one terminal event. Driven with a fake
clock (``scheduling.run_timers``)."""

from __future__ import annotations

import json

from deerflow_controller.client import Task
from deerflow_controller.core.model import ErrorKind, HandlerTraits, TaskError, TaskSpec, TaskState
from deerflow_controller.core.scheduler import AttemptResult
from deerflow_controller.ha.journal import JournaledJob
from deerflow_controller.ha.restore import restore_jobs
from deerflow_controller.ratelimit import KeyLimits, LimiterConfig, RateLimiter
from deerflow_controller.service import wire
from deerflow_protos import client_pb2

from .scheduling import (
    JOB,
    assert_event_log_sound,
    error_of,
    key,
    last_event,
    make,
    run_timers,
    trail,
)


def slow_limiter() -> RateLimiter:
    """One request a second on the rate key "slow"."""
    one_per_second = KeyLimits(rpm=60, safety=1.0, burst_s=1.0, adaptive=False)
    return RateLimiter(LimiterConfig((("slow", one_per_second),), KeyLimits()))


def failed(task_id: str, attempt: int) -> AttemptResult:
    error = TaskError(ErrorKind.HANDLER_ERROR, "503 from the provider", True)
    return AttemptResult(key(task_id, attempt), ok=False, error=error)


# ----------------------------------------------------------------- schedule-to-close


def test_schedule_to_close_ends_a_task_retried_too_long_and_cancels_its_running_attempt() -> None:
    s = make(limiter=slow_limiter())
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(
        JOB,
        "",
        [
            TaskSpec(id="x", handler="echo", schedule_to_close_s=10.0, max_retries=100),
            TaskSpec(id="after", handler="echo", depends_on=("x",)),
        ],
        0.0,
    )
    now, attempt = 0.0, 1
    while job.tasks["x"].attempt < 4:
        s.take()
        now += 2.0
        s.finished("A", [failed("x", attempt)], now)
        now = run_timers(s, now + 1.0)
        attempt = job.tasks["x"].attempt
    s.started("A", [key("x", 4)], now)
    s.take()

    run_timers(s, 10.0)

    x = job.tasks["x"]
    assert x.state == TaskState.TIMED_OUT
    assert error_of(job, "x").kind == ErrorKind.SCHEDULE_TO_CLOSE_TIMEOUT
    assert error_of(job, "x").message == (
        "the task did not finish within its schedule-to-close timeout of 10 s (4 attempts; it "
        "was running attempt 4 on agent 'A'); raise schedule_to_close_s, or add agents or slots"
    )
    assert last_event(job, "x").detail == "schedule-to-close timeout of 10 s passed"
    assert last_event(job, "x").time == 10.0
    assert s.take().cancels == {"A": [key("x", 4)]}
    assert error_of(job, "after").kind == ErrorKind.DEPENDENCY_FAILED
    s.finished("A", [AttemptResult(key("x", 4), ok=True)], 10.5)  # too late: discarded
    assert x.state == TaskState.TIMED_OUT
    assert s.counters.stale_results == 1
    assert_event_log_sound(job)


def test_schedule_to_close_counts_from_when_the_task_is_first_ready() -> None:
    s = make(limiter=slow_limiter())
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(
        JOB,
        "",
        [
            TaskSpec(id="first", handler="echo"),
            TaskSpec(id="x", handler="echo", depends_on=("first",), schedule_to_close_s=5.0),
        ],
        0.0,
    )
    assert [t.id for t in s.take().assignments["A"]] == ["first"]
    run_timers(s, 20.0)
    s.finished("A", [AttemptResult(key("first", 1), ok=True)], 20.0)
    assert [t.id for t in s.take().assignments["A"]] == ["x"]

    run_timers(s, 24.9)
    assert trail(job, "x")[-1] == TaskState.DISPATCHED
    run_timers(s, 25.0)

    assert trail(job, "x")[-1] == TaskState.TIMED_OUT
    assert "it was waiting unstarted on agent 'A'" in error_of(job, "x").message
    assert_event_log_sound(job)


def test_a_task_that_finishes_within_schedule_to_close_is_untouched_by_its_timer() -> None:
    s = make(limiter=slow_limiter())
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [TaskSpec(id="x", handler="echo", schedule_to_close_s=5.0)], 0.0)
    s.finished("A", [AttemptResult(key("x", 1), ok=True)], 1.0)

    run_timers(s, 100.0)

    assert trail(job, "x")[-1] == TaskState.SUCCEEDED
    assert s.counters.timed_out == 0
    assert_event_log_sound(job)


def test_a_throttled_task_past_schedule_to_close_leaves_its_rate_keys_line() -> None:
    s = make(limiter=slow_limiter())
    s.agent_joined("A", ["echo"], 10, 0.0)
    job = s.submit(
        JOB,
        "",
        [
            TaskSpec(
                id=f"t{i}",
                handler="echo",
                rate_keys=("slow",),
                schedule_to_close_s=2.5 if i >= 3 else 0.0,
            )
            for i in range(5)
        ],
        0.0,
    )

    run_timers(s, 3.0)

    states = {t.id: t.state for t in job.tasks.values()}
    assert states == {
        "t0": TaskState.DISPATCHED,
        "t1": TaskState.DISPATCHED,
        "t2": TaskState.DISPATCHED,
        "t3": TaskState.TIMED_OUT,
        "t4": TaskState.TIMED_OUT,
    }
    assert "it was throttled" in error_of(job, "t3").message
    assert s.limiter.waiting == 0
    assert_event_log_sound(job)


# ----------------------------------------------------------------- the job deadline


def test_a_job_past_its_deadline_ends_every_unfinished_task_timed_out() -> None:
    s = make(limiter=slow_limiter())
    s.agent_joined("A", ["echo"], 2, 0.0)
    job = s.submit(
        JOB,
        "",
        [
            TaskSpec(id="done", handler="echo"),
            TaskSpec(id="running", handler="echo"),
            TaskSpec(id="queued", handler="echo"),
            TaskSpec(id="pending", handler="echo", depends_on=("running",)),
            TaskSpec(id="throttled", handler="other", rate_keys=("slow",)),
            TaskSpec(id="throttled2", handler="other", rate_keys=("slow",)),
        ],
        0.0,
        deadline_s=30.0,
    )
    s.finished("A", [AttemptResult(key("done", 1), ok=True)], 1.0)
    s.started("A", [key("running", 1)], 1.0)
    s.take()

    run_timers(s, 29.9)
    assert job.remaining == 5
    run_timers(s, 30.0)

    assert job.done
    assert job.tasks["done"].state == TaskState.SUCCEEDED
    for task_id in ("running", "queued", "pending", "throttled", "throttled2"):
        assert job.tasks[task_id].state == TaskState.TIMED_OUT, task_id
        assert error_of(job, task_id).kind == ErrorKind.JOB_DEADLINE_EXCEEDED, task_id
        assert last_event(job, task_id).detail == "job deadline of 30 s passed"
    assert error_of(job, "pending").message == (
        "job 'j' reached its deadline of 30 s before this task finished (it was waiting for "
        "its dependencies); raise the job's deadline_s, or add agents or slots"
    )
    out = s.take()
    assert out.cancels == {"A": [key("running", 1), key("queued", 1)]}
    assert JOB in out.touched_jobs
    assert s.limiter.waiting == 0
    assert_event_log_sound(job)


def test_a_job_finished_before_its_deadline_is_left_alone() -> None:
    s = make(limiter=slow_limiter())
    s.agent_joined("A", ["echo"], 2, 0.0)
    job = s.submit(JOB, "", [TaskSpec(id="a", handler="echo")], 0.0, deadline_s=5.0)
    s.finished("A", [AttemptResult(key("a", 1), ok=True)], 1.0)

    run_timers(s, 10.0)

    assert job.tasks["a"].state == TaskState.SUCCEEDED
    assert s.counters.timed_out == 0
    assert_event_log_sound(job)


def test_a_restored_job_keeps_the_deadline_of_its_first_acceptance() -> None:
    request = client_pb2.SubmitJobRequest(job_id=JOB, deadline_s=10.0, accepted_at=100.0)
    request.tasks.add(id="a", handler="echo")
    request.tasks.add(id="b", handler="echo", schedule_to_close_s=30.0)
    s = make(limiter=slow_limiter())

    restore_jobs(s, [JournaledJob(request, {})], 104.0)
    job = s.jobs[JOB]
    assert job.tasks["b"].spec.schedule_to_close_s == 30.0
    s.agent_joined("A", ["echo"], 1, 104.0)
    s.release_restored(106.0)

    run_timers(s, 109.9)
    assert job.remaining == 2
    run_timers(s, 110.0)

    assert job.submitted_at == 100.0
    assert {t.error.kind for t in job.tasks.values() if t.error} == {
        ErrorKind.JOB_DEADLINE_EXCEEDED
    }
    assert_event_log_sound(job)


def test_the_sdk_sends_schedule_to_close_and_the_controller_reads_it() -> None:
    proto = Task("a", "echo", schedule_to_close_s=42.5).to_proto()

    assert wire.spec_from_proto(proto).schedule_to_close_s == 42.5


def test_schedule_to_close_bounds_a_split_task_and_stops_its_parts() -> None:
    s = make(limiter=slow_limiter())
    traits = {"hash": HandlerTraits(kind="cpu", items_field="items", default_duration_s=1.0)}
    s.agent_joined("A", ["hash"], 4, 0.0, traits=traits)
    payload = json.dumps({"items": list(range(8))}).encode()
    job = s.submit(
        JOB, "", [TaskSpec(id="t", handler="hash", payload=payload, schedule_to_close_s=5.0)], 0.0
    )
    parts = s.take().assignments["A"]
    assert len(parts) == 4

    run_timers(s, 5.0)

    assert trail(job, "t") == [TaskState.RUNNING, TaskState.TIMED_OUT]
    assert "it was running split into 4 parts" in error_of(job, "t").message
    assert sorted(k[1] for k in s.take().cancels["A"]) == sorted(p.id for p in parts)
    assert_event_log_sound(job)
