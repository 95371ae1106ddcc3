"""Terminal states of the scheduling core: an attempt's failure (retry or give up), a task's
terminal transition and its one terminal event, failing dependents, and every event a job's log
gets. Functions of :class:`~deerflow_controller.core.state.SchedulerCore`, bound to it as
methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from deerflow_controller.core.inputs import release_inputs, retain_output
from deerflow_controller.core.model import (
    ErrorClass,
    ErrorKind,
    Event,
    Job,
    Task,
    TaskError,
    TaskState,
)
from deerflow_controller.core.timers import TimerKind
from deerflow_controller.core.types import SplitRun
from deerflow_controller.recovery import classify

if TYPE_CHECKING:
    from deerflow_controller.core.state import SchedulerCore

_NO_METADATA: Mapping[str, str] = {}


def _with_class(error: TaskError, cls: ErrorClass) -> TaskError:
    if error.error_class == cls:
        return error
    return TaskError(error.kind, error.message, error.retryable, error.retry_after_s, cls)


def forget_in_flight(self: SchedulerCore, task: Task) -> None:
    agent = self.agents.get(task.agent_id)
    if agent is not None:
        self.credit_index.release(agent, task.key)
        self._attempt_ended(agent.id, task.key, task.deadline)


def release_slot_by_cancel(self: SchedulerCore, task: Task) -> None:
    """Ask the agent to stop a dispatched attempt. Its slot stays counted until the agent
    reports the attempt's end, so credit never overstates what the agent can take."""
    if task.state in (TaskState.DISPATCHED, TaskState.RUNNING) and task.agent_id:
        self.outbox.cancels.setdefault(task.agent_id, []).append(task.key)
    elif task.state == TaskState.QUEUED:
        self.ready.discard(task)


def attempt_failed(
    self: SchedulerCore,
    task: Task,
    error: TaskError,
    now: float,
    *,
    cls: ErrorClass | None = None,
    metadata: Mapping[str, str] = _NO_METADATA,
) -> None:
    """End the current attempt badly: retry while the error class's budget lasts (after a
    decorrelated-jitter delay with the provider's Retry-After as a floor; see
    ``recovery.retry``), else finish the task. The decision's reason rides on the event."""
    failed_on, task.agent_id = task.agent_id, ""
    self.limiter.end_attempt(task)
    task.failures += 1
    if cls is None:
        cls = classify(error, metadata)
    if not error.retryable:
        self._finish(task, TaskState.FAILED, now, error=_with_class(error, cls), agent=failed_on)
        return
    decision = self._decide_retry(task, error, cls, metadata)
    if not decision.retry:
        final = TaskState.TIMED_OUT if cls == ErrorClass.TIMEOUT else TaskState.FAILED
        error = TaskError(
            error.kind,
            f"{error.message}; gave up after {task.failures} attempts: {decision.reason}",
            False,
            error.retry_after_s,
            cls,
        )
        self._finish(task, final, now, error=error, agent=failed_on)
        return
    self.counters.retries += 1
    delay = decision.delay_s
    not_before = now + delay
    task.state = TaskState.QUEUED
    self._emit(
        task,
        TaskState.RETRYING,
        now,
        error=_with_class(error, cls),
        not_before=not_before,
        agent=failed_on,
        detail=decision.reason,
    )
    if delay > 0:
        self._push_timer(not_before, TimerKind.RETRY, task, task.failures)
    else:
        self._make_ready(task, now)


def finish(
    self: SchedulerCore,
    task: Task,
    state: TaskState,
    now: float,
    *,
    error: TaskError | None = None,
    attempt: int | None = None,
    agent: str | None = None,
    detail: str = "",
    cache_layer: str = "",
) -> None:
    """Move a task to a terminal state and settle its dependents: release them when it
    succeeded, fail them at once otherwise. A success whose output dependents read is kept for
    them, or ends FAILED (RESOURCE_EXHAUSTED) when over a bound (``core.inputs``)."""
    if state == TaskState.SUCCEEDED and task.parent is None:
        budget = self.config.max_output_bytes
        over = self.outputs.make_room(task, budget, lambda job: forget_job(self, job))
        if over is None and task.consumers > 0:
            over = retain_output(self.config, task)
        if over is not None:
            state, error, detail, cache_layer = TaskState.FAILED, over, "", ""
            task.output = b""  # not kept: nothing reads a failed task's output
    self._terminal(task, state, now, error, attempt, agent, detail, cache_layer)
    if state == TaskState.SUCCEEDED:
        for dep in task.dependents:
            dep.waiting_on -= 1
            if dep.waiting_on == 0 and dep.state == TaskState.PENDING:
                self._make_ready(dep, now)
    else:
        self._fail_dependents(task, now)


def fail_dependents(self: SchedulerCore, root: Task, now: float) -> None:
    """Fail every live transitive dependent of ``root`` (iteratively: chains may be deep).
    Each message names the direct dependency and the root cause, so it stays short."""
    cause = root.error.message if root.error else root.state.name.lower()
    cause = f"{root.state.name}: {cause}"
    work = [root]
    while work:
        failed = work.pop()
        if failed is root:
            message = f"dependency {root.id!r} ended {cause}"
        else:
            message = f"dependency {failed.id!r} ended FAILED because {root.id!r} ended {cause}"
        error = TaskError(ErrorKind.DEPENDENCY_FAILED, message)
        for dep in failed.dependents:
            if not dep.terminal:
                self._terminal(dep, TaskState.FAILED, now, error, None, None)
                work.append(dep)


def terminal(
    self: SchedulerCore,
    task: Task,
    state: TaskState,
    now: float,
    error: TaskError | None,
    attempt: int | None,
    agent: str | None,
    detail: str = "",
    cache_layer: str = "",
) -> None:
    """Bookkeeping of one task's terminal transition and its one terminal event."""
    self._leave_wait(task)
    self.limiter.end_attempt(task)
    task.state = state
    task.error = error
    if self.cache is not None and (task.cache_key is not None or task.cache_leader):
        self._cache_settle(task, state, now)
    if task.parent is not None:
        if agent:
            task.agent_id = agent
        self._part_ended(task, now)
        return
    if isinstance(task.split, SplitRun):
        self._cancel_parts(task.split, range(len(task.split.parts)), now)
    spec = task.spec
    if spec.inputs or spec.inputs_all:
        release_inputs(task)
    c = self.counters
    if state == TaskState.SUCCEEDED:
        c.succeeded += 1
    elif state == TaskState.FAILED:
        c.failed += 1
    elif state == TaskState.CANCELLED:
        c.cancelled += 1
    else:
        c.timed_out += 1
    if agent:
        task.agent_id = agent
    self._emit(
        task,
        state,
        now,
        output=task.output if state == TaskState.SUCCEEDED else b"",
        error=error,
        attempt=attempt,
        detail=detail,
        cache_layer=cache_layer,
    )
    if state == TaskState.SUCCEEDED:
        self.outputs.kept(task)
    job = task.job
    job.remaining -= 1
    job.terminal_events += 1
    self.quotas.task_ended(task)
    if job.remaining == 0:
        self.outputs.job_finished(job)
        job.finished_at = now
        self._push_timer(now + self.config.job_retention_s, TimerKind.EXPIRE_JOB, job)


def forget_job(self: SchedulerCore, job: Job) -> None:
    """Forget ``job`` (its retention ended, or its outputs made room for others'): its
    watchers are told (``Outbox.expired_jobs``) and later calls naming it are NOT_FOUND."""
    if self.jobs.get(job.id) is job:
        del self.jobs[job.id]
        self.outputs.job_forgotten(job)
        self.outbox.expired_jobs.append(job.id)
        # Timers still name the job or its tasks until they fire (its retention, a task's
        # deadline): drop the outputs now, or forgetting a job early frees nothing. Watchers
        # holding the job see it forgotten (the shell's job table) and end NOT_FOUND.
        for task in job.tasks.values():
            task.output = b""
        job.events.clear()


def emit(
    self: SchedulerCore,
    task: Task,
    state: TaskState,
    now: float,
    *,
    output: bytes = b"",
    error: TaskError | None = None,
    not_before: float = 0.0,
    attempt: int | None = None,
    agent: str | None = None,
    detail: str = "",
    cache_layer: str = "",
    predicted_s: float = 0.0,
    progress: float = -1.0,
) -> None:
    if task.parent is not None:
        return  # parts are the controller's business; the client sees their parent
    job = task.job
    job.events.append(
        Event(
            job.id,
            task.spec.id,
            state,
            len(job.events) + 1,
            task.attempt if attempt is None else attempt,
            task.agent_id if agent is None else agent,
            now,
            output,
            error,
            not_before,
            detail,
            cache_layer,
            predicted_s,
            progress,
        )
    )
    self.outbox.touched_jobs.add(job.id)
