"""Rebuild the scheduler's jobs from the journal when this controller becomes the leader, and
keep journaling final results while it leads (a :class:`ShellInterceptor`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from deerflow_protos import common_pb2

from .. import wire
from ..model import TERMINAL_STATES, Task, TaskState
from ..scheduler import Outbox, RestoredResult, Scheduler
from ..shell import Shell
from .journal import Journal, JournaledJob

log = logging.getLogger(__name__)


def restore_jobs(sched: Scheduler, jobs: Sequence[JournaledJob], now: float) -> tuple[int, int]:
    """Put every journaled job back into ``sched`` (see ``Scheduler.restore_job``). Returns
    ``(tasks, finished)``: how many tasks were restored and how many of them had a result."""
    tasks = finished = 0
    for job in jobs:
        request = job.request
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
        sched.restore_job(
            request.job_id,
            request.name,
            specs,
            results,
            now,
            submitted_at=request.accepted_at,
            deadline_s=request.deadline_s,
        )
        tasks += len(specs)
        finished += len(results)
    return tasks, finished


class JournalTap:
    """Queues each flush's new terminal events into the current term's journal, and forgets
    the jobs the scheduler expired. Does nothing while this controller does not lead."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.journal: Journal | None = None
        self._cursors: dict[str, int] = {}

    def begin(self, journal: Journal) -> None:
        """Start a term: events already in the (restored) logs are journaled already."""
        self.journal = journal
        self._cursors = {
            job_id: len(job.events) for job_id, job in self.shell.scheduler.jobs.items()
        }

    def end(self) -> None:
        self.journal = None
        self._cursors = {}

    def on_decisions(self, out: Outbox) -> None:
        journal = self.journal
        if journal is None:
            return
        jobs = self.shell.scheduler.jobs
        cursors = self._cursors
        for job_id in out.touched_jobs:
            job = jobs.get(job_id)
            if job is None:
                continue
            events = job.events
            start = cursors.get(job_id, 0)
            end = len(events)
            if start >= end:
                continue
            batch = []
            for i in range(start, end):
                ev = events[i]
                if ev.state in TERMINAL_STATES:
                    p = common_pb2.TaskEvent()
                    wire.fill_event(ev, p)
                    batch.append(p)
            cursors[job_id] = end
            if batch:
                journal.add_results(job_id, batch)
        for job_id in out.expired_jobs:
            cursors.pop(job_id, None)
            journal.forget(job_id)

    def on_assignments(self, tasks: Sequence[Task]) -> None:
        return None
