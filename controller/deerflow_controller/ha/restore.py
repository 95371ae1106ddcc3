"""Rebuild the scheduler's jobs from the journal when this controller becomes the leader, and
keep journaling final results while it leads (a :class:`ShellInterceptor`)."""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from deerflow_controller.core.model import TERMINAL_STATES, Job, Task, TaskState
from deerflow_controller.core.scheduler import Outbox, RestoredJob, RestoredResult, Scheduler
from deerflow_controller.ha.journal import Expiry, Journal, JournaledJob
from deerflow_controller.service import wire
from deerflow_controller.service.shell import Shell
from deerflow_protos import common_pb2

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Restored:
    """What a takeover made of the journal."""

    jobs: int = 0
    tasks: int = 0
    """Tasks of the restored jobs, each counted once."""
    finished: int = 0
    """Of those, the tasks restored with their final result."""
    expired: list[str] = field(default_factory=list)
    """Finished jobs whose expiry passed: not restored; the new leader deletes them at once."""
    kept: dict[str, Expiry] = field(default_factory=dict)
    """Finished jobs within their retention, and their expiry, which the new leader keeps (it
    does not start their retention again)."""


def restore_jobs(into: Shell | Scheduler, jobs: Sequence[JournaledJob], now: float) -> Restored:
    """Put the journaled jobs back into ``into`` (the leader's shell, which flushes what it
    decided; a bare scheduler in tests; see ``Scheduler.restore_job``), ``now`` in wall-clock
    seconds. A finished job (it has an expiry) is not restored past its expiry; a
    delivered one whose result was too large to journal is not restored at all, so that none of
    its tasks runs again for a client that has them all."""
    out = Restored()
    for job in jobs:
        request = job.request
        expiry = job.expiry
        if expiry is not None:
            if expiry.at <= now:
                out.expired.append(request.job_id)
                continue
            out.kept[request.job_id] = expiry
            if expiry.delivered and not job.complete:
                log.warning(
                    "job %r was delivered but not all of its results were journaled (too "
                    "large); it is not restored, so that none of its tasks runs again",
                    request.job_id,
                )
                continue
        specs = wire.specs_from_request(request)
        results = {
            task_id: RestoredResult(
                TaskState(ev.state),
                ev.output,
                wire.error_from_proto(ev.error) if ev.HasField("error") else None,
                ev.attempt,
                ev.agent_id,
            )
            for task_id, ev in job.results.items()
        }
        into.restore_job(
            RestoredJob(
                request.job_id,
                request.name,
                specs,
                results,
                submitted_at=request.accepted_at,
                deadline_s=request.deadline_s,
            ),
            now,
        )
        out.jobs += 1
        out.tasks += len(specs)
        out.finished += sum(1 for spec in specs if spec.id in results)
    return out


class JournalTap:
    """Queues each flush's new terminal events into the current term's journal, the expiry of
    each job that finished, and forgets the jobs the scheduler expired. Does nothing while this
    controller does not lead.

    It also fences delivery (``Shell.delivery_limit``): a job's watchers are given its events
    only up to its first terminal event not yet committed to the journal. A result a client was
    told is therefore one the next leader restores: a leader cut off from etcd cannot tell a
    client a result that its successor, which never saw it, then produces again differently.
    After the term ends the fence stays where the last commit left it."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.journal: Journal | None = None
        self._cursors: dict[str, int] = {}
        self._held: dict[str, collections.deque[tuple[int, int]]] = {}
        """Per job, the batches queued and not yet committed: (index of the batch's first
        terminal event, end of the batch) in ``job.events``, oldest first."""
        shell.delivery_limit = self.limit
        shell.fenced_jobs = self.fenced

    def begin(self, journal: Journal) -> None:
        """Start a term: events already in the (restored) logs are journaled already; a
        restored job that finished gets an expiry if the journal had none."""
        self.journal = journal
        jobs = self.shell.scheduler.jobs
        self._cursors = {job_id: len(job.events) for job_id, job in jobs.items()}
        self._held = {}
        retention = self.shell.config.scheduler.job_retention_s
        for job_id, job in jobs.items():
            if job.done:
                journal.expire_at(job_id, Expiry(job.finished_at + retention))

    def end(self) -> None:
        """The term is over: nothing more is journaled, so nothing held is ever delivered."""
        self.journal = None

    def limit(self, job: Job) -> int:
        """How many of ``job``'s events its watchers may be given now: up to its first terminal
        event that is not committed (queued, or not yet seen by this tap)."""
        events = job.events
        held = self._held.get(job.id)
        if held:
            return held[0][0]
        for i in range(self._cursors.get(job.id, 0), len(events)):
            if events[i].state in TERMINAL_STATES:
                return i
        return len(events)

    def fenced(self) -> Iterable[str]:
        """The jobs with results queued for the journal and not committed yet."""
        return self._held.keys()

    def _committed(self, job_id: str, end: int) -> None:
        held = self._held.get(job_id)
        while held and held[0][1] <= end:
            held.popleft()
        if not held:
            self._held.pop(job_id, None)
        self.shell.wake_watchers(job_id)

    def on_decisions(self, out: Outbox) -> None:
        journal = self.journal
        if journal is None:
            return
        jobs = self.shell.scheduler.jobs
        cursors = self._cursors
        retention = self.shell.config.scheduler.job_retention_s
        for job_id in out.touched_jobs:
            job = jobs.get(job_id)
            if job is None:
                continue
            events = job.events
            start = cursors.get(job_id, 0)
            end = len(events)
            batch = []
            first = -1
            for i in range(start, end):
                ev = events[i]
                if ev.state in TERMINAL_STATES:
                    if first < 0:
                        first = i
                    p = common_pb2.TaskEvent()
                    wire.fill_event(ev, p)
                    batch.append(p)
            cursors[job_id] = end
            if batch:
                self._held.setdefault(job_id, collections.deque()).append((first, end))
                journal.add_results(job_id, batch, functools.partial(self._committed, job_id, end))
            if job.done:
                # Queued after its last results, so it commits with or after them.
                journal.expire_at(job_id, Expiry(job.finished_at + retention))
        for job_id in out.expired_jobs:
            cursors.pop(job_id, None)
            self._held.pop(job_id, None)
            journal.forget(job_id)

    def on_assignments(self, tasks: Sequence[Task]) -> None:
        return None
