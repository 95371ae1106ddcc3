"""Time in the scheduling core: :func:`tick` fires due timers; attempt deadlines, heartbeats,
schedule-to-start and schedule-to-close, job deadlines and agent liveness end or retry what
waited too long. Functions of :class:`~deerflow_controller.core.state.SchedulerCore`, bound to it as
methods."""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

from deerflow_controller.core.model import ErrorClass, ErrorKind, Job, Task, TaskError, TaskState
from deerflow_controller.core.terminal import forget_job
from deerflow_controller.core.timers import TimerKind
from deerflow_controller.core.types import SplitRun

if TYPE_CHECKING:
    from deerflow_controller.core.state import SchedulerCore


def tick(self: SchedulerCore, now: float) -> None:
    """Fire every timer due at ``now``: retries, attempt deadlines, expiries."""
    timers = self._timers
    while timers and timers[0][0] <= now:
        _, _, kind, subject, token = heapq.heappop(timers)
        if kind == TimerKind.RETRY:
            task = subject
            assert isinstance(task, Task)
            if task.state == TaskState.QUEUED and task.failures == token and not task.ready_seq:
                self._make_ready(task, now)
        elif kind == TimerKind.DEADLINE:
            task = subject
            assert isinstance(task, Task)
            # The attempt must still be on an agent: a task split since (a restored task
            # adopted running whole, split on its retry) keeps its attempt number, RUNNING
            # on no agent while its parts run.
            if (
                task.attempt == token
                and task.agent_id
                and task.state in (TaskState.DISPATCHED, TaskState.RUNNING)
            ):
                self._deadline_due(task, now)
        elif kind == TimerKind.EXPIRE_JOB:
            assert isinstance(subject, Job)
            forget_job(self, subject)
        elif kind == TimerKind.ORPHAN_SWEEP:
            self._fail_orphans(now)
        elif kind == TimerKind.LIVENESS and self._liveness_at <= now:
            self._liveness_at = math.inf
            self._check_liveness(now)
        elif kind == TimerKind.RATE_RELEASE and self._rate_timer_at <= now:
            self._rate_timer_at = math.inf
        elif kind == TimerKind.SCHEDULE_TO_START:
            assert isinstance(subject, Task)
            self._schedule_to_start_due(subject, token, now)
        elif kind == TimerKind.HEARTBEAT:
            assert isinstance(subject, Task)
            if subject.attempt == token and subject.agent_id and subject.state == TaskState.RUNNING:
                self._heartbeat_due(subject, now)
        elif kind == TimerKind.RECOVERY:
            self._advance_recovery(now)
        elif kind == TimerKind.SCHEDULE_TO_CLOSE:
            assert isinstance(subject, Task)
            if not subject.terminal and subject.close_at <= now:
                self._schedule_to_close_due(subject, now)
        elif kind == TimerKind.JOB_DEADLINE:
            assert isinstance(subject, Job)
            if self.jobs.get(subject.id) is subject and not subject.done:
                self._job_deadline_due(subject, now)
    self._dispatch(now)


def check_liveness(self: SchedulerCore, now: float) -> None:
    """Agents silent for ``agent_silence_s`` (no heartbeat, no report) are dead even if their
    stream looks open: a hung process can keep TCP alive while doing nothing."""
    silence = self.config.agent_silence_s
    # The same sum as the next check's time below: with ``last_heartbeat <= now - silence``
    # rounding could spare an agent whose ``last_heartbeat + silence`` is already ``now``,
    # and the check would then be rescheduled at ``now`` for ever (the model test found it).
    for agent in [a for a in self.agents.values() if a.last_heartbeat + silence <= now]:
        self.outbox.disconnects.append(agent.id)
        self.agent_left(agent.id, now)
    if self.agents:
        # Next look when the agent heard from longest ago reaches the limit, so a hung agent
        # is declared dead ``agent_silence_s`` after its last message. (A fixed cadence of
        # silence/2 let it live up to 1.5 times the limit: 22 s for 15 s.)
        oldest = min(a.last_heartbeat for a in self.agents.values())
        self._schedule_liveness(oldest + silence)


def schedule_liveness(self: SchedulerCore, when: float) -> None:
    """Keep one liveness check pending: the earliest one wanted."""
    if when < self._liveness_at:
        self._liveness_at = when
        self._push_timer(when, TimerKind.LIVENESS, None)


def deadline_due(self: SchedulerCore, task: Task, now: float) -> None:
    if task.deadline > now:
        return  # the attempt started later than dispatch; a later timer covers it
    if task.state == TaskState.DISPATCHED:
        # Not started yet: it waits in a busy agent's prefetch, which is no start-to-close
        # breach (schedule-to-start covers waiting). A dead agent is noticed by its stream.
        task.deadline = now + task.timeout_s + self.config.timeout_grace_s
        self._push_timer(task.deadline, TimerKind.DEADLINE, task, task.attempt)
        return
    agent_id = task.agent_id
    self.outbox.cancels.setdefault(agent_id, []).append(task.key)
    # Unlike a client cancel, free the slot now: an agent that overran its own timeout by
    # the grace period is not trusted to report the attempt's end.
    self._forget_in_flight(task)
    error = TaskError(
        ErrorKind.TIMEOUT,
        f"attempt {task.attempt} on agent {agent_id!r} did not finish within "
        f"{task.timeout_s:g} s (start-to-close)",
        retryable=True,
        error_class=ErrorClass.TIMEOUT,
    )
    self._record_failure(task, agent_id, error, ErrorClass.TIMEOUT, now)
    self._attempt_failed(task, error, now, cls=ErrorClass.TIMEOUT)


def schedule_to_start_due(self: SchedulerCore, task: Task, armed_attempt: int, now: float) -> None:
    """Schedule-to-start expired for the attempt armed as ``armed_attempt``: the task ends
    TIMED_OUT unless that attempt started (it may wait queued, throttled or prefetched)."""
    if task.terminal:
        return
    waiting = (
        task.attempt == armed_attempt and task.state in (TaskState.QUEUED, TaskState.THROTTLED)
    ) or (task.attempt == armed_attempt + 1 and task.state == TaskState.DISPATCHED)
    if not waiting:
        return
    where = {
        TaskState.QUEUED: "queued for a free slot",
        TaskState.THROTTLED: "throttled by its rate keys",
        TaskState.DISPATCHED: f"waiting unstarted on agent {task.agent_id!r}",
    }[task.state]
    error = TaskError(
        ErrorKind.SCHEDULE_TIMEOUT,
        f"no agent started attempt {task.attempt + (task.state != TaskState.DISPATCHED)} "
        f"within its schedule-to-start timeout of {task.spec.schedule_to_start_s:g} s (it "
        f"was {where}); add agents or slots, raise schedule_to_start_s, or lower the load",
    )
    self.counters.schedule_timeouts += 1
    self._release_slot_by_cancel(task)
    self._finish(task, TaskState.TIMED_OUT, now, error=error)


def schedule_to_close_due(self: SchedulerCore, task: Task, now: float) -> None:
    """Schedule-to-close expired: the task ends TIMED_OUT wherever it is, an attempt still
    on an agent is cancelled there, and its dependents fail. Never retried."""
    limit = task.spec.schedule_to_close_s
    attempts = f"{task.attempt} attempt{'s' if task.attempt != 1 else ''}"
    error = TaskError(
        ErrorKind.SCHEDULE_TO_CLOSE_TIMEOUT,
        f"the task did not finish within its schedule-to-close timeout of {limit:g} s "
        f"({attempts}; it was {whereabouts(task)}); raise schedule_to_close_s, or "
        "add agents or slots",
        error_class=ErrorClass.TIMEOUT,
    )
    self._release_slot_by_cancel(task)
    detail = f"schedule-to-close timeout of {limit:g} s passed"
    self._finish(task, TaskState.TIMED_OUT, now, error=error, detail=detail)


def arm_job_deadline(self: SchedulerCore, job: Job, now: float, deadline_s: float) -> None:
    """Arm ``job``'s deadline, ``deadline_s`` after ``now`` (no timer for 0)."""
    if deadline_s > 0:
        job.deadline_s = deadline_s
        self._push_timer(now + deadline_s, TimerKind.JOB_DEADLINE, job)


def job_deadline_due(self: SchedulerCore, job: Job, now: float) -> None:
    """The job's deadline passed: each unfinished task ends TIMED_OUT (pending ones too),
    attempts still on agents are cancelled there. As with cancelling a whole job, every
    unfinished task gets the deadline as its own reason, none DEPENDENCY_FAILED."""
    ended: list[Task] = []
    for task in job.tasks.values():
        if task.terminal:
            continue
        error = TaskError(
            ErrorKind.JOB_DEADLINE_EXCEEDED,
            f"job {job.id!r} reached its deadline of {job.deadline_s:g} s before this task "
            f"finished (it was {whereabouts(task)}); raise the job's deadline_s, or "
            "add agents or slots",
            error_class=ErrorClass.TIMEOUT,
        )
        self._release_slot_by_cancel(task)
        detail = f"job deadline of {job.deadline_s:g} s passed"
        self._terminal(task, TaskState.TIMED_OUT, now, error, None, None, detail)
        ended.append(task)
    for task in ended:
        self._fail_dependents(task, now)


def whereabouts(task: Task) -> str:
    """Where an unfinished task is, for a timeout's message."""
    state = task.state
    if state == TaskState.PENDING:
        return "waiting for its dependencies"
    if state == TaskState.QUEUED:
        if task.ready_seq:
            return "queued for a free slot"
        if task.failures:
            return f"waiting to retry after {task.failures} failed attempts"
        if task.cache_leader is not None:
            return f"waiting for the identical task {task.cache_leader[1]!r}"
        return "queued"
    if state == TaskState.THROTTLED:
        return f"throttled ({task.parked_on} circuit open)" if task.parked_on else "throttled"
    if state == TaskState.DISPATCHED:
        return f"waiting unstarted on agent {task.agent_id!r}"
    if isinstance(task.split, SplitRun):
        return f"running split into {len(task.split.parts)} parts"
    return f"running attempt {task.attempt} on agent {task.agent_id!r}"


def heartbeat_due(self: SchedulerCore, task: Task, now: float) -> None:
    hb = task.spec.heartbeat_timeout_s
    due = task.progress_at + hb
    if due > now:
        self._push_timer(due, TimerKind.HEARTBEAT, task, task.attempt)
        return
    agent_id = task.agent_id
    self.outbox.cancels.setdefault(agent_id, []).append(task.key)
    self._forget_in_flight(task)
    self.counters.heartbeat_timeouts += 1
    error = TaskError(
        ErrorKind.HEARTBEAT_TIMEOUT,
        f"attempt {task.attempt} on agent {agent_id!r} reported no progress for {hb:g} s "
        "(heartbeat timeout); the handler should call ctx.progress() more often than that",
        retryable=True,
        error_class=ErrorClass.TIMEOUT,
    )
    self._record_failure(task, agent_id, error, ErrorClass.TIMEOUT, now)
    self._attempt_failed(task, error, now, cls=ErrorClass.TIMEOUT)
