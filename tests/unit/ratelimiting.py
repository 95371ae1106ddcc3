"""Helpers shared by the scheduler-with-rate-limiter tests (test_scheduler_ratelimit_*.py): a
scheduler with given key limits, rate-keyed specs, 429 results and admission records."""

from __future__ import annotations

from typing import Any

from deerflow_common import signals
from deerflow_controller.core.model import (
    ErrorKind,
    Job,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Outbox, Scheduler
from deerflow_controller.ratelimit import KeyGate, KeyLimits, LimiterConfig, RateLimiter

from .scheduling import JOB, key, make

KEY = "llm/openai"

RPM_600 = KeyLimits(rpm=600)
"""10/s paced at 98 %: 9.8/s, 0.5 s deep (4.9 requests)."""
ONE_PER_SECOND = KeyLimits(rpm=60, safety=1.0, burst_s=1.0, adaptive=False)
"""Exactly one request a second, one deep: admission times are whole seconds."""


def limited(
    limits: dict[str, KeyLimits] | None = None,
    *,
    default: KeyLimits | None = None,
    **overrides: Any,
) -> Scheduler:
    """The shared seeded scheduler (``scheduling.make``) with the given limits per rate key and
    ``default`` for the others."""
    config = LimiterConfig(tuple((limits or {}).items()), default or KeyLimits())
    return make(limiter=RateLimiter(config), **overrides)


def keyed_spec(
    task_id: str,
    *rate_keys: str,
    handler: str = "llm",
    tenant: str = "",
    priority: int = 0,
    est_tokens: float = 0.0,
    max_retries: int = -1,
    timeout_s: float = 0.0,
) -> TaskSpec:
    """A task spec drawing on ``rate_keys`` (handler "llm" unless asked)."""
    return TaskSpec(
        id=task_id,
        handler=handler,
        rate_keys=rate_keys,
        tenant=tenant,
        priority=priority,
        est_tokens=est_tokens,
        max_retries=max_retries,
        timeout_s=timeout_s,
    )


def specs(n: int, *rate_keys: str, prefix: str = "t", **kwargs: Any) -> list[TaskSpec]:
    return [keyed_spec(f"{prefix}{i}", *rate_keys, **kwargs) for i in range(n)]


def ok(task_id: str, attempt: int, job_id: str = JOB, **meta: str) -> AttemptResult:
    return AttemptResult(key(task_id, attempt, job_id), ok=True, metadata=meta)


def rate_limited(
    task_id: str, attempt: int, retry_after: str | None = None, job_id: str = JOB
) -> AttemptResult:
    """The provider answered 429 (with a Retry-After when given)."""
    meta = {signals.HTTP_STATUS: "429"}
    if retry_after is not None:
        meta[signals.RETRY_AFTER_S] = retry_after
    error = TaskError(ErrorKind.HANDLER_ERROR, "429 Too Many Requests", True)
    return AttemptResult(key(task_id, attempt, job_id), ok=False, error=error, metadata=meta)


def status(code: str, **more: str) -> dict[str, str]:
    return {signals.HTTP_STATUS: code, **more}


def assigned_ids(out: Outbox, agent: str = "A") -> list[str]:
    return [t.id for t in out.assignments.get(agent, [])]


def admissions(*jobs: Job) -> list[tuple[float, str]]:
    """(time, task id) of every QUEUED event, by time: a rate-keyed task is queued when
    admitted."""
    queued = [e for job in jobs for e in job.events if e.state == TaskState.QUEUED]
    return [(e.time, e.task_id) for e in sorted(queued, key=lambda e: e.time)]


def admission_times(job: Job) -> list[float]:
    return [e.time for e in job.events if e.state == TaskState.QUEUED]


def gate(s: Scheduler, rate_key: str = KEY) -> KeyGate:
    return s.limiter.gates[rate_key]


def assert_slots_settled(s: Scheduler) -> None:
    """Nothing holds a rate slot any more."""
    for rate_key, g in s.limiter.gates.items():
        assert g.in_flight == 0, f"{rate_key}: {g.in_flight} slots still held"
    for job in s.jobs.values():
        for task in job.tasks.values():
            assert task.rate_hold is None, task.id
