"""The core without policy objects (no cache, decomposition, placement or recovery installed):
a plain FIFO scheduler with credit and fixed retries, so its tests can run with any subset.
Each policy area is also shown alone: placement (prediction, LPT order) and recovery (retry
budgets and jitter) change only what they own."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import ErrorKind, TaskError, TaskSpec, TaskState
from deerflow_controller.core.placement_policy import Placement
from deerflow_controller.core.recovery_policy import Recovery
from deerflow_controller.core.scheduler import AttemptResult
from deerflow_controller.core.state import SchedulerCore
from deerflow_controller.recovery import RecoveryConfig, RetryConfig

from .scheduling import JOB, assert_event_log_sound, events_of, fail, key, spec, trail


def core(**overrides: Any) -> SchedulerCore:
    """The bare core, seeded; credit equals slots."""
    base = SchedulerConfig(prefetch=0, prefetch_fraction=0.0, agent_silence_s=1e9)
    return SchedulerCore(replace(base, **overrides))


def test_the_core_alone_runs_a_job_in_submission_order_and_ends_it() -> None:
    s = core()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a"), spec("b")], 0.0)

    assert [t.id for t in s.take().assignments["A"]] == ["a"]
    s.finished("A", [AttemptResult(key("a", 1), ok=True)], 1.0)
    assert [t.id for t in s.take().assignments["A"]] == ["b"]
    s.finished("A", [AttemptResult(key("b", 1), ok=True)], 2.0)

    assert job.done and s.counters.succeeded == 2
    assert s.cache is None and s.breakers.all_closed
    assert_event_log_sound(job)


def test_the_core_alone_retries_a_failed_attempt_and_never_opens_a_circuit() -> None:
    s = core()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a", max_retries=1)], 0.0)
    s.take()
    error = TaskError(ErrorKind.HANDLER_ERROR, "HTTP 503 from the provider", True)
    s.finished("A", [AttemptResult(key("a", 1), ok=False, error=error)], 1.0)
    s.tick(s.next_timer() or 1.0)
    s.finished("A", [AttemptResult(key("a", 2), ok=True)], 2.0)

    assert trail(job, "a")[-1] == TaskState.SUCCEEDED
    assert s.counters.retries == 1 and s.counters.circuit_trips == 0
    assert_event_log_sound(job)


def timed(task_id: str, est_duration_s: float) -> TaskSpec:
    return TaskSpec(id=task_id, handler="echo", est_duration_s=est_duration_s)


def test_the_core_without_a_placement_policy_predicts_nothing_and_keeps_fifo_order() -> None:
    s = core()
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.agent_joined("B", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [timed("short", 1.0), timed("long", 100.0), timed("mid", 10.0)], 0.0)

    first = s.take().assignments
    assert sorted(t.id for tasks in first.values() for t in tasks) == ["long", "short"]
    agent = next(a for a, tasks in first.items() if tasks[0].id == "long")
    s.finished(agent, [AttemptResult(key("long", 1), ok=True, run_s=50.0)], 1.0)

    assert [t.id for t in s.take().assignments[agent]] == ["mid"]
    assert all(t.predicted_s < 0 and t.features is None for t in job.tasks.values())
    assert all(e.predicted_s == 0.0 for t in job.tasks for e in events_of(job, t))
    assert not hasattr(s, "predictor") and not hasattr(s, "balancer")


def test_a_placement_policy_alone_predicts_and_queues_the_longest_task_first() -> None:
    s = core()
    placement = Placement(s.port, s.config.predictor, s.config.balancer)
    s.use_placement(placement)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [timed("short", 1.0), timed("long", 100.0), timed("mid", 10.0)], 0.0)

    order = []
    for now in (1.0, 2.0, 3.0):
        (task,) = s.take().assignments["A"]
        order.append(task.id)
        assert task.key in placement.balancer.ledgers["A"].pending  # its predicted backlog
        s.finished("A", [AttemptResult(key(task.id, 1), ok=True, run_s=1.0)], now)

    assert order == ["long", "mid", "short"]
    assert job.tasks["long"].predicted_s == pytest.approx(100.0)
    assert s.breakers.all_closed and s.cache is None


def test_the_core_without_a_recovery_policy_retries_at_once_until_max_retries_then_fails() -> None:
    # The recovery config's budgets and delays are the recovery policy's: without it they
    # change nothing.
    slow = RetryConfig(transient_base_s=30.0, transient_cap_s=60.0)
    s = core(recovery=RecoveryConfig(retry=slow))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a", max_retries=1)], 0.0)
    s.take()

    s.finished("A", [fail("a", 1, "HTTP 503 from the provider")], 1.0)
    (retrying,) = [e for e in events_of(job, "a") if e.state == TaskState.RETRYING]
    assert retrying.not_before == 1.0
    assert retrying.detail == "retry 1 of 1 at once"
    assert [t.id for t in s.take().assignments["A"]] == ["a"]  # no timer: at once
    s.finished("A", [fail("a", 2, "HTTP 503 from the provider")], 2.0)

    assert trail(job, "a")[-1] == TaskState.FAILED
    error = job.tasks["a"].error
    assert error is not None and error.message.endswith(
        "gave up after 2 attempts: gave up: retry budget of 1 used"
    )
    assert s.counters.retries == 1
    assert_event_log_sound(job)


def test_a_recovery_policy_alone_delays_retries_by_its_budget_and_jitter() -> None:
    retry = RetryConfig(transient_base_s=30.0, transient_cap_s=60.0)
    s = core(recovery=RecoveryConfig(retry=retry))
    s.use_recovery(Recovery(s.port, s.config.recovery, seed=7))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a", max_retries=1)], 0.0)
    s.take()

    s.finished("A", [fail("a", 1, "HTTP 503 from the provider")], 1.0)

    retrying = events_of(job, "a")[-1]
    assert retrying.state == TaskState.RETRYING and 31.0 <= retrying.not_before <= 61.0
    assert not s.take().assignments
    s.tick(retrying.not_before)
    assert [t.id for t in s.take().assignments["A"]] == ["a"]
    assert job.tasks["a"].retry is not None  # the policy keeps its state on the task
