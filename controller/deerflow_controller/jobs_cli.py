"""What ``deerflow jobs`` and ``deerflow job ID`` print: the admin API's ``JobList`` and
``JobDetail`` (``service/job_views.py``) as tables, or as JSON with the same field names as the
protobuf messages (the dashboard's ``/api/jobs`` serves the same JSON)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.message import Message

from deerflow_protos import admin_pb2, common_pb2

if TYPE_CHECKING:  # rich draws the command line's tables; the HTTP side needs only as_dict
    from rich.console import Console

__all__ = ["as_dict", "print_job", "print_jobs"]

FAILED_STATES = frozenset({"FAILED", "TIMED_OUT", "CANCELLED"})


def as_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data, for ``--json`` and the HTTP side's ``/api/jobs`` alike:
    field names as in the .proto, every field present, enums by name."""
    out: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return out


def _secs(s: float) -> str:
    if s <= 0:
        return ""
    return f"{s * 1000:.3g} ms" if s < 1 else f"{s:.2f} s"


def _age(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _counts(by_state: Any) -> str:
    return ", ".join(f"{n} {state.lower()}" for state, n in sorted(by_state.items()))


def print_jobs(console: Console, jobs: admin_pb2.JobList, where: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    # Every value came from a client: printed as text, never as rich markup.
    table = Table(title=escape(f"jobs at {where} ({len(jobs.jobs)} of {jobs.held} held)"))
    table.add_column("job", no_wrap=True)  # an id to copy: never broken over lines
    for col in ("name", "state", "tasks", "by state", "age", "tenant"):
        table.add_column(col)
    for j in jobs.jobs:
        table.add_row(
            escape(j.job_id),
            escape(j.name),
            j.state,
            str(j.total),
            _counts(j.tasks_by_state),
            _age(j.age_s),
            escape(j.tenant),
        )
    console.print(table)
    if jobs.next_cursor:
        console.print(escape(f"more: --cursor {jobs.next_cursor}"))


def print_job(console: Console, detail: admin_pb2.JobDetail) -> None:
    from rich.markup import escape
    from rich.table import Table

    j = detail.job
    console.print(
        escape(
            f"job {j.job_id} {j.name!r}: {j.state}, {j.total} tasks ({_counts(j.tasks_by_state)}),"
            f" submitted {_age(j.age_s)} ago" + (f", tenant {j.tenant}" if j.tenant else "")
        )
    )
    table = Table()
    table.add_column("task", no_wrap=True)
    for col in ("handler", "state", "attempts", "agent", "predicted", "actual"):
        table.add_column(col)
    for col in ("cache", "depends on", "trace id"):
        table.add_column(col)
    for t in detail.tasks:
        table.add_row(
            escape(t.task_id),
            escape(t.handler),
            t.state,
            str(t.attempts),
            escape(t.agent_id),
            _secs(t.predicted_s),
            _secs(t.actual_s),
            t.cache_layer,
            escape(", ".join(t.depends_on)),
            t.trace_id,
        )
    console.print(table)
    for t in detail.tasks:
        if t.state not in FAILED_STATES:
            continue
        console.print(escape(f"{t.task_id} {t.state}: {t.error.message}"))
        for ev in t.events:
            # What each event adds to the task's error: the controller's detail, and the
            # errors of earlier attempts.
            error = ev.error.message if ev.error.message != t.error.message else ""
            why = "; ".join(x for x in (error, ev.detail) if x)
            if why:
                state = common_pb2.TaskState.Name(ev.state)
                console.print(escape(f"  attempt {ev.attempt} {state}: {why}"))
    if detail.note:
        console.print(escape(detail.note))
