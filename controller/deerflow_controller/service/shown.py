"""What a client is shown of a job: its tasks as of the deliverable prefix of its event log.

In HA mode a result may be told only once the journal has committed it: ``JournalTap`` fences
each job's event log at its first terminal event not yet committed (``Shell.deliverable``), so
that a client never acts on a result a failover loses (the task runs again and may give another
output). WatchJob streams the log up to that limit; the reads (``JobService.GetJob`` and
``GetTask``, the admin jobs view and the dashboard's JSON) show the job as of the same prefix: a
task whose terminal event lies past the limit is *withheld*, shown in the state of its last event
before the limit, without output or error, and the job is not done until its last terminal event
is deliverable. Non-terminal events past the limit (a dispatch, a retry) are no result and are
shown as the core holds them. Outside HA mode the whole log is deliverable and every task is
shown as the core holds it.

Cost: nothing beyond the core's records while the whole log is deliverable (the usual case, and
always outside HA mode). Otherwise one pass over the undelivered suffix (the results of the
journal's last turn or two), then one backward pass from the limit that stops as soon as every
withheld task's last deliverable event is found (for a task that just finished, usually its
RUNNING event a short way back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deerflow_controller.core.model import TERMINAL_STATES, Event, Job, Task, TaskState

_TASK_STATE_OF_EVENT = {TaskState.RETRYING: TaskState.QUEUED, TaskState.PROGRESS: TaskState.RUNNING}
"""Event-only states and the task state they leave the task in (see ``TaskState``)."""
_ON_AN_AGENT = frozenset({TaskState.DISPATCHED, TaskState.RUNNING})


@dataclass(frozen=True, slots=True)
class Withheld:
    """A task whose result is not deliverable yet, as the deliverable prefix shows it."""

    state: TaskState
    """Its state after its last event before the limit (never a terminal one)."""
    attempt: int
    agent_id: str
    """The agent of that attempt while DISPATCHED or RUNNING, else ""."""


def withheld(job: Job, limit: int, only: str | None = None) -> dict[str, Withheld]:
    """The tasks of ``job`` whose terminal event lies at or past ``limit`` (an index into
    ``job.events``: ``Shell.deliverable``), by task id, each as of its last event before the
    limit; with ``only``, just that task (GetTask). Empty when the whole log is deliverable."""
    events = job.events
    end = len(events)
    if limit >= end:
        return {}
    left: set[str] = set()
    for i in range(limit, end):
        ev = events[i]
        if ev.state in TERMINAL_STATES and (only is None or ev.task_id == only):
            left.add(ev.task_id)
    out: dict[str, Withheld] = {}
    i = limit
    while left and i > 0:
        i -= 1
        ev = events[i]
        if ev.task_id in left:
            left.discard(ev.task_id)
            out[ev.task_id] = _as_of(ev)
    for task_id in left:
        # No event before the limit: restored and held after a failover (QUEUED, no event),
        # or answered at its submit (a cache hit) after another task's result was fenced.
        task = job.tasks[task_id]
        waiting = TaskState.PENDING if task.spec.depends_on else TaskState.QUEUED
        out[task_id] = Withheld(waiting, 0, "")
    return out


def _as_of(ev: Event) -> Withheld:
    state = _TASK_STATE_OF_EVENT.get(ev.state, ev.state)
    return Withheld(state, ev.attempt, ev.agent_id if state in _ON_AN_AGENT else "")


@dataclass(slots=True)
class WithheldTotals:
    """Over many jobs (``Shell.withheld_totals``): their withheld tasks by the state the core
    holds them in, and how many of the jobs are done in the core but not shown done."""

    by_state: dict[TaskState, int] = field(default_factory=dict)
    done_jobs: int = 0

    def add(self, shown: ShownJob) -> None:
        if not shown.withheld:
            return
        tasks = shown.job.tasks
        for task_id in shown.withheld:
            state = tasks[task_id].state
            self.by_state[state] = self.by_state.get(state, 0) + 1
        self.done_jobs += shown.job.done

    @property
    def tasks(self) -> int:
        return sum(self.by_state.values())


class ShownJob:
    """A job as a client may be shown it now (see the module's docstring): read it at once,
    as the next event loop turn may move the limit."""

    __slots__ = ("job", "limit", "withheld")

    def __init__(self, job: Job, limit: int) -> None:
        self.job = job
        self.limit = limit
        """How many of the job's events are deliverable (``Shell.deliverable``)."""
        self.withheld = withheld(job, limit)

    @staticmethod
    def whole(job: Job) -> ShownJob:
        """The job as the core holds it: every event deliverable (no journal)."""
        return ShownJob(job, len(job.events))

    @property
    def done(self) -> bool:
        """Every task's terminal event is deliverable."""
        return self.job.done and not self.withheld

    @property
    def finished_at(self) -> float:
        """When the job finished (seconds), 0 while it is not shown done."""
        return self.job.finished_at if self.done else 0.0

    def state(self, task: Task) -> TaskState:
        held = self.withheld.get(task.id)
        return task.state if held is None else held.state

    def by_state(self) -> dict[str, int]:
        """How many of its tasks are shown in each state, by state name."""
        tasks = self.job.tasks
        out: dict[str, int] = {}
        for task in tasks.values():
            name = task.state.name
            out[name] = out.get(name, 0) + 1
        for task_id, held in self.withheld.items():
            name = tasks[task_id].state.name
            out[name] -= 1
            if not out[name]:
                del out[name]
            out[held.state.name] = out.get(held.state.name, 0) + 1
        return out
