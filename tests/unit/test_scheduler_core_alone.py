"""The core without policy objects (no cache, decomposition, placement or recovery installed):
a plain FIFO scheduler with credit and fixed retries, so its tests can run with any subset."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import ErrorKind, TaskError, TaskState
from deerflow_controller.core.scheduler import AttemptResult
from deerflow_controller.core.state import SchedulerCore
from deerflow_controller.recovery import RecoveryConfig, RetryConfig

from .scheduling import JOB, assert_event_log_sound, key, spec, trail


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
    retry = RetryConfig(transient_base_s=0.0)
    s = core(recovery=RecoveryConfig(retry=retry))
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
