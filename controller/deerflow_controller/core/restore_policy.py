"""Restore (issue #3): a new leader rebuilds jobs from the etcd journal, holds their unfinished
tasks while known agents reconnect, adopts the attempts those agents still run, then releases the
rest. Part of the pure core: no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from deerflow_controller.core.inputs import retain_output
from deerflow_controller.core.model import AttemptKey, Job, Task, TaskState
from deerflow_controller.core.port import CorePort
from deerflow_controller.core.types import RESTORABLE, RestoredJob


class Restorer:
    """A new leader rebuilds jobs from the etcd journal (``deerflow_controller.ha``): tasks whose
    final result was journaled come back terminal; the others are *held* (QUEUED but outside the
    ready queue) while known agents reconnect, so an attempt an agent still runs is adopted
    instead of being run twice. :meth:`release` ends the hold. Owns the held tasks; talks to the
    core through its :class:`~deerflow_controller.core.port.CorePort`."""

    __slots__ = ("_core", "_held")

    def __init__(self, core: CorePort) -> None:
        self._core = core
        self._held: dict[tuple[str, str], Task] = {}
        """Held restored tasks by (job id, task id); empty outside a restore."""

    def restore_job(self, record: RestoredJob, now: float) -> Job:
        """Rebuild a journaled job: ``record.finished`` maps task ids to their journaled final
        result.

        Finished tasks get their one terminal event again (in the restored job's new event log);
        their failures fail live dependents as usual. Unfinished tasks whose dependencies all
        succeeded are held until :meth:`release`; the rest are PENDING. Dispatches
        nothing. A job id already known is returned unchanged. The job's deadline counts from
        ``submitted_at`` (when the first leader accepted it; ``now`` when unknown): one already
        passed ends its unfinished tasks at the next tick."""
        core = self._core
        job_id, finished = record.job_id, record.finished
        submitted_at, deadline_s = record.submitted_at, record.deadline_s
        existing = core.jobs.get(job_id)
        if existing is not None:
            return existing
        job = core.add_job(job_id, record.name, record.specs, submitted_at or now)
        tasks = job.tasks
        ended: list[Task] = []
        for task_id, result in finished.items():
            done = tasks.get(task_id)
            if done is None or done.terminal or result.state not in RESTORABLE:
                continue
            done.attempt = result.attempt
            if result.state == TaskState.SUCCEEDED:
                done.output = result.output
                for dependent in done.dependents:
                    dependent.waiting_on -= 1
            core.terminal(done, result.state, now, result.error, result.attempt, result.agent_id)
            ended.append(done)
        for done in ended:
            if done.state != TaskState.SUCCEEDED:
                core.fail_dependents(done, now)
            elif done.consumers > 0:
                # Its journaled output goes to the dependents still to run (issue #15); it was
                # within the bounds when it was produced.
                retain_output(core.config, done, force=True)
        if not job.done:
            core.arm_job_deadline(job, submitted_at or now, deadline_s)
        held = self._held
        for task in tasks.values():
            if task.terminal:
                continue
            if task.waiting_on:
                core.emit(task, TaskState.PENDING, now)
            else:
                task.state = TaskState.QUEUED
                held[(job_id, task.id)] = task
        return job

    def adopt(self, running: Iterable[AttemptKey], now: float) -> None:
        """Before an agent's Hello is applied (``Scheduler.agent_joined``): give each held task the
        attempt number the agent reports running, so that ``agent_joined`` keeps the attempt
        on the agent rather than cancelling it. The attempt keeps a full start-to-close."""
        held = self._held
        if not held:
            return
        for job_id, task_id, attempt in running:
            task = held.pop((job_id, task_id), None)
            if task is None or task.terminal or task.agent_id:
                continue
            task.attempt = attempt
            task.deadline = now + task.timeout_s + self._core.config.timeout_grace_s

    def holds(self, task: Task) -> bool:
        """Whether ``task`` is held for the reconnect grace, never given to an agent by this
        leader: the journal does not say who held its attempt, so a result any reconnected
        agent buffered across the failover is taken for it (until the grace ends)."""
        return not task.holders and self._held.get((task.job.id, task.id)) is task

    def release(self, now: float) -> int:
        """End the reconnect grace: held tasks no agent reclaimed become ready (and are
        dispatched). Returns how many were released."""
        held = self._held
        released = 0
        for task in list(held.values()):
            if not task.terminal and not task.agent_id and task.state == TaskState.QUEUED:
                self._core.make_ready(task, now)
                released += 1
        held.clear()
        self._core.dispatch(now)
        return released

    def waiting(self) -> int:
        """Restored tasks still held for the reconnect grace."""
        return len(self._held)
