"""Helpers shared by the scheduler's unit tests: attempt keys, event trails, the event-log
soundness check every scenario ends with, and a seeded scheduler (:func:`make`) with task specs
and results to feed it."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from deerflow_controller.cache import ResultCache
from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import (
    AttemptKey,
    ErrorKind,
    Event,
    Job,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Outbox, Scheduler
from deerflow_controller.ratelimit import RateLimiter
from deerflow_controller.recovery import RecoveryConfig, RetryConfig

JOB = "j"


def key(task_id: str, attempt: int, job_id: str = JOB) -> AttemptKey:
    return (job_id, task_id, attempt)


def events_of(job: Job, task_id: str) -> list[Event]:
    return [e for e in job.events if e.task_id == task_id]


def trail(job: Job, task_id: str) -> list[TaskState]:
    return [e.state for e in events_of(job, task_id)]


def last_event(job: Job, task_id: str) -> Event:
    return events_of(job, task_id)[-1]


def error_of(job: Job, task_id: str) -> TaskError:
    error = job.tasks[task_id].error
    assert error is not None
    return error


def run_timers(s: Scheduler, until: float) -> float:
    """The fake clock: tick at every instant ``next_timer()`` reports up to ``until``, as the
    shell does; returns the last tick time (-1 when none). Fails when the scheduler keeps asking
    to be ticked at one instant without moving on."""
    last, repeats = -1.0, 0
    while True:
        when = s.next_timer()
        if when is None or when > until:
            return last
        repeats = repeats + 1 if when == last else 0
        assert repeats < 20, f"next_timer() stays at {when!r}: ticking there changes nothing"
        s.tick(when)
        last = when


def run_one_at_a_time(s: Scheduler, agent: str, now: float, step: float = 1.0) -> list[str]:
    """Let ``agent`` finish its attempts one at a time, oldest first, ``step`` seconds apart,
    until it has none; returns the ids of the tasks it was assigned meanwhile, in order."""
    order: list[str] = []
    while s.agents[agent].in_flight:
        now += step
        oldest = next(iter(s.agents[agent].in_flight))
        s.finished(agent, [AttemptResult(oldest, ok=True)], now)
        order.extend(t.id for t in s.take().assignments.get(agent, []))
    return order


def assert_event_log_sound(job: Job) -> None:
    """Seqs run 1..n; a finished task has exactly one terminal event, its last, matching its
    state; an unfinished task has none; a task is reported THROTTLED once per wait (never twice
    in a row); the job's counts agree."""
    assert [e.seq for e in job.events] == list(range(1, len(job.events) + 1))
    by_task: dict[str, list[Event]] = {task_id: [] for task_id in job.tasks}
    for event in job.events:
        by_task[event.task_id].append(event)
    for task_id, task in job.tasks.items():
        events = by_task[task_id]
        states = [e.state for e in events]
        terminal = [e for e in events if e.terminal]
        if task.terminal:
            assert len(terminal) == 1, f"{task_id}: {states}"
            assert events[-1] is terminal[0], f"{task_id}: {states}"
            assert terminal[0].state == task.state
        else:
            assert terminal == [], f"{task_id}: {states}"
        for before, after in itertools.pairwise(states):
            assert not (before == after == TaskState.THROTTLED), f"{task_id}: {states}"
    unfinished = sum(not t.terminal for t in job.tasks.values())
    assert job.remaining == unfinished
    assert job.terminal_events == len(job.tasks) - unfinished


# ----------------------------------------------------------------- scheduler test helpers


def retries(**kw: Any) -> RecoveryConfig:
    """A recovery config whose retry policy has ``kw`` (see recovery.RetryConfig)."""
    return RecoveryConfig(retry=RetryConfig(**kw))


def make(
    *,
    seed: int = 7,
    limiter: RateLimiter | None = None,
    cache: ResultCache | None = None,
    **overrides: Any,
) -> Scheduler:
    """A seeded scheduler; prefetch 0 unless asked (no floor, no rate-sized part), so an agent's
    credit equals its slots. ``overrides`` are SchedulerConfig fields.
    Silent agents are only declared dead in the tests that ask for it (agent_silence_s)."""
    base = SchedulerConfig(
        prefetch=0, prefetch_fraction=0.0, prefetch_cover_s=0.0, agent_silence_s=1e9
    )
    return Scheduler(replace(base, **overrides), limiter=limiter, seed=seed, cache=cache)


def spec(
    task_id: str,
    *depends_on: str,
    handler: str = "echo",
    priority: int = 0,
    timeout_s: float = 0.0,
    max_retries: int = -1,
) -> TaskSpec:
    return TaskSpec(
        id=task_id,
        handler=handler,
        priority=priority,
        depends_on=depends_on,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )


def ok(task_id: str, attempt: int, output: bytes = b"done", job_id: str = JOB) -> AttemptResult:
    return AttemptResult(key(task_id, attempt, job_id), ok=True, output=output)


def fail(
    task_id: str,
    attempt: int,
    message: str = "boom",
    *,
    retryable: bool = True,
    retry_after_s: float = 0.0,
) -> AttemptResult:
    error = TaskError(ErrorKind.HANDLER_ERROR, message, retryable, retry_after_s)
    return AttemptResult(key(task_id, attempt), ok=False, error=error)


def assigned(out: Outbox) -> dict[str, list[AttemptKey]]:
    """The outbox's assignments as attempt keys, read at once (a task's key follows its attempt)."""
    return {agent: [t.key for t in tasks] for agent, tasks in out.assignments.items()}


def run_one(sched: Scheduler, agent: str) -> str:
    """The single task just assigned to ``agent``: its id."""
    out = sched.take()
    assert list(out.assignments) == [agent]
    (task,) = out.assignments[agent]
    return task.id
