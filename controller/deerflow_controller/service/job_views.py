"""The jobs view: what ``AdminService.ListJobs``/``GetJob``, the CLI's ``deerflow jobs``/``job``
and the dashboard's jobs pages show, read from what the core already keeps (each job's task
records and event log). One reading, as protobuf messages; the HTTP side serves the same
messages as JSON, so every view agrees. Each job is read as a client may be shown it
(``service/shown.py``): in HA mode a result not yet journaled is withheld, as WatchJob does.

Everything here reads and returns at once. Costs: a page of ``ListJobs`` reads every held job
once (O(jobs)) plus the tasks of the jobs on the page (and of every job when filtering by a
finished state); ``GetJob`` reads the job's event log once (O(events)).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from deerflow_common.tracing import parse_traceparent
from deerflow_controller.core.model import TERMINAL_STATES, Event, Job, Task, TaskState
from deerflow_controller.core.validation import quote
from deerflow_controller.service import wire
from deerflow_controller.service.credentials import Principal
from deerflow_controller.service.job_service import job_tenant, visible
from deerflow_controller.service.shown import ShownJob, Withheld
from deerflow_protos import admin_pb2

DEFAULT_JOBS = 50
MAX_JOBS = 500
DEFAULT_TASKS = 500
MAX_TASKS = 2000
EVENTS_PER_TASK = 50
"""Events of one task a ``GetJob`` answer carries (its last ones): a task retried many times or
reporting progress for an hour must not make the answer unbounded."""

JOB_STATES = ("RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
_BAD = frozenset({TaskState.FAILED, TaskState.TIMED_OUT})


class ViewRefused(ValueError):
    """A request outside the bounds: the message is one sentence saying what to send."""


def job_state(shown: ShownJob, counts: dict[str, int] | None = None) -> str:
    """RUNNING, FAILED, CANCELLED or SUCCEEDED (see admin.proto's ``JobSummary.state``);
    ``counts`` are ``shown.by_state()`` when the caller has them."""
    if not shown.done:
        return "RUNNING"
    if counts is None:
        counts = shown.by_state()
    if any(counts.get(s.name) for s in _BAD):
        return "FAILED"
    if counts.get(TaskState.CANCELLED.name):
        return "CANCELLED"
    return "SUCCEEDED"


def summary(shown: ShownJob, now: float) -> admin_pb2.JobSummary:
    job = shown.job
    counts = shown.by_state()
    return admin_pb2.JobSummary(
        job_id=job.id,
        name=job.name,
        state=job_state(shown, counts),
        total=len(job.tasks),
        tasks_by_state=counts,
        submitted_at=job.submitted_at,
        finished_at=shown.finished_at,
        age_s=max(0.0, now - job.submitted_at),
        tenant=job_tenant(job),
    )


def _cursor_key(cursor: str) -> tuple[float, str] | None:
    if not cursor:
        return None
    at, sep, job_id = cursor.partition(":")
    try:
        return (float(at), job_id) if sep else None
    except ValueError:
        return None


def list_jobs(
    jobs: Iterable[Job],
    who: Principal | None,
    now: float,
    limit: int,
    cursor: str,
    state: str,
    *,
    shown: Callable[[Job], ShownJob],
) -> admin_pb2.JobList:
    """A page of the jobs ``who`` may see, newest first (by submission time, then id), each as
    ``shown`` (``Shell.shown``) gives it; raises :class:`ViewRefused` for a limit, cursor or
    state outside the bounds."""
    limit = limit or DEFAULT_JOBS
    if not 1 <= limit <= MAX_JOBS:
        raise ViewRefused(f"limit {limit} is outside 1 to {MAX_JOBS}; page with next_cursor")
    state = state.upper()
    if state and state not in JOB_STATES:
        raise ViewRefused(f"state {quote(state)} is not one of {', '.join(JOB_STATES)} (or empty)")
    after = _cursor_key(cursor)
    if cursor and after is None:
        raise ViewRefused(
            f"cursor {quote(cursor)} is not a next_cursor this controller gave; send it unchanged"
        )
    held = 0
    candidates: list[tuple[float, str, Job]] = []
    for job in jobs:
        if not visible(job, who):
            continue
        held += 1
        key = (job.submitted_at, job.id)
        if after is not None and key >= after:
            continue
        if state and state != job_state(shown(job)):
            continue
        candidates.append((job.submitted_at, job.id, job))
    page = heapq.nlargest(limit + 1, candidates, key=lambda c: (c[0], c[1]))
    out = admin_pb2.JobList(held=held)
    for at, job_id, job in page[:limit]:
        out.jobs.append(summary(shown(job), now))
        out.next_cursor = f"{at!r}:{job_id}"
    if len(page) <= limit:
        out.next_cursor = ""
    return out


def _trace_id(task: Task) -> str:
    parent = parse_traceparent(task.spec.trace_context.get("traceparent", ""))
    return parent.trace_id.hex() if parent is not None else ""


def _spans(events: list[Event]) -> list[admin_pb2.AttemptSpan]:
    """The attempts the events tell of, in order: dispatch, start, end."""
    spans: dict[int, admin_pb2.AttemptSpan] = {}
    for ev in events:
        if ev.state is TaskState.DISPATCHED:
            spans[ev.attempt] = admin_pb2.AttemptSpan(
                attempt=ev.attempt,
                agent_id=ev.agent_id,
                dispatched_at=ev.time,
                predicted_s=ev.predicted_s,
            )
            continue
        span = spans.get(ev.attempt)
        if span is None or span.ended_at:
            continue
        if ev.state is TaskState.RUNNING:
            span.started_at = ev.time
        elif ev.state in TERMINAL_STATES or ev.state is TaskState.RETRYING:
            span.ended_at = ev.time
            span.outcome = ev.state.name
    return [spans[a] for a in sorted(spans)]


def task_detail(
    task: Task, events: list[Event], withheld: Withheld | None = None
) -> admin_pb2.TaskDetail:
    """One task as its ``events`` tell, or, ``withheld`` (its result is not deliverable yet),
    as of its last deliverable event: ``events`` then end before its terminal one."""
    state, attempt, agent_id = task.state, task.attempt, task.agent_id
    if withheld is not None:
        state, attempt, agent_id = withheld.state, withheld.attempt, withheld.agent_id
    out = admin_pb2.TaskDetail(
        task_id=task.id,
        handler=task.spec.handler,
        state=state.name,
        attempts=attempt,
        agent_id=agent_id,
        depends_on=task.spec.depends_on,
        trace_id=_trace_id(task),
    )
    if task.error is not None and withheld is None:
        wire.error_to_proto(task.error, out.error)
    spans = _spans(events)
    out.spans.extend(spans)
    if spans:
        last = spans[-1]
        out.predicted_s = last.predicted_s
        if last.started_at and last.ended_at:
            out.actual_s = max(0.0, last.ended_at - last.started_at)
        out.started_at = next((s.started_at for s in spans if s.started_at), 0.0)
    if task.run_s and state is TaskState.SUCCEEDED:
        out.actual_s = task.run_s  # the agent's own clock, when it said
    for ev in events:
        if ev.cache_layer:
            out.cache_layer = ev.cache_layer
        if ev.terminal:
            out.finished_at = ev.time
    kept = events[-EVENTS_PER_TASK:]
    out.events_dropped = len(events) - len(kept)
    for ev in kept:
        wire.fill_event(ev, out.events.add())
        out.events[-1].ClearField("output")
    return out


def job_detail(shown: ShownJob, now: float, limit: int, offset: int) -> admin_pb2.JobDetail:
    """The job (as ``Shell.shown`` gives it) and a page of its tasks (submission order); raises
    :class:`ViewRefused`."""
    job = shown.job
    limit = limit or DEFAULT_TASKS
    if not 1 <= limit <= MAX_TASKS:
        raise ViewRefused(
            f"task_limit {limit} is outside 1 to {MAX_TASKS}; page with next_task_offset"
        )
    total = len(job.tasks)
    if offset < 0 or (offset and offset >= total):
        raise ViewRefused(f"task_offset {offset} is outside 0 to {max(0, total - 1)}")
    page = list(job.tasks.values())[offset : offset + limit]
    wanted = {t.id for t in page}
    by_task: dict[str, list[Event]] = {t: [] for t in wanted}
    deliverable, withheld = shown.limit, shown.withheld
    for ev in job.events:
        # seq counts from 1: a withheld task's events past the limit are not shown.
        if ev.task_id in wanted and (ev.seq <= deliverable or ev.task_id not in withheld):
            by_task[ev.task_id].append(ev)
    out = admin_pb2.JobDetail(job=summary(shown, now), task_offset=offset)
    for task in page:
        out.tasks.append(task_detail(task, by_task[task.id], withheld.get(task.id)))
    end = offset + len(page)
    if end < total:
        out.next_task_offset = end
        out.note = (
            f"tasks {offset + 1} to {end} of {total} are shown; ask for task_offset {end} for "
            "the next ones"
        )
    elif offset:
        out.note = f"tasks {offset + 1} to {end} of {total} are shown"
    return out
