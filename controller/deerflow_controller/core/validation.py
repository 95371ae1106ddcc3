"""Checks a submitted job before anything is accepted: all-or-nothing, pure, no I/O.

Each failure names the task and the problem in a sentence a person can act on; the shell maps
:class:`JobRejected` to INVALID_ARGUMENT or RESOURCE_EXHAUSTED. A sentence cites what was sent
only through :func:`quote` (a bounded prefix): a status message travels in gRPC's trailing
metadata, and one over the client's limit (8 KB soft, 16 KB hard by default) never reaches it:
the client sees "Stream removed" instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deerflow_controller.core.model import TaskSpec

_INF = math.inf


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int
    max_tasks_per_job: int
    max_retries: int
    max_deadline_s: float = 7 * 86400.0
    """Longest schedule-to-close or job deadline accepted (7 days): longer than any research
    job runs, and short enough that the timers of a forgotten one do not outlive a release."""


MAX_NAME_BYTES = 256
"""Longest job id, task id, handler name, tenant, rate key and label key or value, in UTF-8
bytes: room for any naming scheme (a UUID is 36, a rate key such as "llm/key-1/gpt-4o" 16),
and a bound on what each of them costs in every index, metric label and log line."""

MAX_JOB_NAME_BYTES = 1024
"""Longest job name (free-form text shown by `deerflow stats` and the dashboard)."""

MAX_PRIORITY = 1_000_000
"""Priorities run from -MAX_PRIORITY to MAX_PRIORITY (higher first): far more levels than any
ranking needs, and far from int32's ends, where arithmetic on them would overflow elsewhere."""

QUOTE_CHARS = 64
"""How much of a value sent a refusal cites (see :func:`quote`)."""

CYCLE_TASKS_SHOWN = 4
"""How many tasks of a dependency cycle a refusal names."""

MAX_LABELS = 64
"""Most labels on a task or in an agent's Hello: each is kept for the task's or agent's life
and matched on placement, so their number is bounded as each one's size is."""

MAX_RATE_KEYS = 16
"""Most rate keys (budgets) one task draws on: it waits until every one has room."""

MAX_TRACE_CONTEXT_ENTRIES = 16
"""Most entries in a trace context, the job's or a task's (W3C's traceparent and tracestate
need two; baggage-style extras a few more)."""

MAX_TRACE_VALUE_BYTES = 512
"""Longest value in a trace context, in UTF-8 bytes (W3C caps tracestate at 512 characters);
keys are names (:data:`MAX_NAME_BYTES`)."""

MAX_HANDLERS_PER_AGENT = 1024
"""Most handlers one agent's Hello declares: each costs an entry in every placement index for
as long as the agent stays (a Hello declaring 100,000 held 1.18 GB)."""

MAX_CANCEL_IDS = 100_000
"""Most task ids one CancelJob names (and never more than the job has tasks)."""

UNKNOWN_IDS_SHOWN = 3
"""How many unknown task ids a refusal of a CancelJob names."""


def count_problem(count: int, field: str, most: int) -> str | None:
    """The sentence for ``count`` ``field`` over the limit ``most`` (None: within it)."""
    if count <= most:
        return None
    return f"{count} {field}, over the limit of {most}"


def trace_context_problem(tc: Mapping[str, str]) -> str | None:
    """What is wrong with a trace context (None: nothing): too many entries, a key that is not
    a name, or a value over :data:`MAX_TRACE_VALUE_BYTES`."""
    problem = count_problem(len(tc), "entries", MAX_TRACE_CONTEXT_ENTRIES)
    if problem is not None:
        return f"trace_context has {problem}; send fewer"
    for key, value in tc.items():
        if _name_ok(key) and _name_ok(value, MAX_TRACE_VALUE_BYTES):
            continue  # the usual case: no sentence built
        problem = name_problem(key, "trace_context key")
        if problem is None and not _name_ok(value, MAX_TRACE_VALUE_BYTES):
            problem = name_problem(
                value, f"trace_context value of {quote(key, 32)}", MAX_TRACE_VALUE_BYTES
            )
        if problem is not None:
            return problem
    return None


def cancel_count_problem(count: int, job_tasks: int) -> str | None:
    """What is wrong with a CancelJob naming ``count`` task ids of a job of ``job_tasks`` tasks
    (None: nothing): more ids than the job has tasks, or than :data:`MAX_CANCEL_IDS`."""
    problem = count_problem(count, "task ids", min(job_tasks, MAX_CANCEL_IDS))
    if problem is None:
        return None
    return (
        f"the CancelJob names {problem} (the job has {job_tasks} tasks); name each task once, "
        "or none to cancel the whole job; nothing was cancelled"
    )


def unknown_ids_problem(ids: Sequence[str], known: Mapping[str, object], job_id: str) -> str | None:
    """The ids of ``ids`` not in ``known`` (None: none), of which the sentence names at most
    :data:`UNKNOWN_IDS_SHOWN` (each a bounded prefix) and counts the rest."""
    unknown = [t for t in ids if t not in known]
    if not unknown:
        return None
    shown = ", ".join(quote(t, 32) for t in unknown[:UNKNOWN_IDS_SHOWN])
    more = len(unknown) - UNKNOWN_IDS_SHOWN
    rest = f" and {more} more" if more > 0 else ""
    return f"job {quote(job_id)} has no task {shown}{rest}; nothing was cancelled"


def quote(value: str, most: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for a short value; for a longer one, the repr of its first ``most``
    characters and how many more there were: every message that echoes input uses this, so a
    1 MB id yields a 100-character sentence."""
    if len(value) <= most:
        return repr(value)
    return f"{value[:most]!r}... ({len(value) - most} more characters)"


def name_problem(value: str, field: str, most: int = MAX_NAME_BYTES) -> str | None:
    """What is wrong with ``value`` as a name (None: nothing): over ``most`` UTF-8 bytes, or a
    character that is not printable (control characters, line breaks, invisible formatting).
    The sentence names ``field`` and the limit and cites a bounded prefix."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > most:
        return (
            f"{field} {quote(value, 32)} is {size} bytes, over the limit of {most}; "
            f"use a shorter {field}"
        )
    if not value.isprintable():
        at = next(i for i, c in enumerate(value) if not c.isprintable())
        return (
            f"{field} {quote(value, 32)} has an unprintable character ({value[at]!r} at "
            f"position {at}); use printable characters only"
        )
    return None


class JobRejected(Exception):
    """The job was refused as a whole; nothing of it was accepted."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def validate_job(
    specs: Sequence[TaskSpec],
    limits: Limits,
    *,
    deadline_s: float = 0.0,
    job_id: str = "",
    name: str = "",
    trace_context: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`JobRejected` for the first problem found; return None when the job is sound.
    ``deadline_s`` is the job's deadline as submitted (0: none); ``job_id`` and ``name`` as
    submitted ("" when not given); ``trace_context`` the job's (each task without one of its
    own shares it, and is not checked again)."""
    for value, field, most in (
        (job_id, "job id", MAX_NAME_BYTES),
        (name, "job name", MAX_JOB_NAME_BYTES),
    ):
        problem = name_problem(value, field, most) if value else None
        if problem is not None:
            raise JobRejected(problem)
    if trace_context:
        problem = trace_context_problem(trace_context)
        if problem is not None:
            raise JobRejected(f"the job's {problem}")
    if not specs:
        raise JobRejected("the job has no tasks; submit at least one task")
    if not _seconds_in_range(deadline_s, limits.max_deadline_s):
        raise JobRejected(
            f"the job's deadline_s is {deadline_s!r}; use a number of seconds from 0 (no "
            f"deadline) to {limits.max_deadline_s:g}"
        )
    if len(specs) > limits.max_tasks_per_job:
        raise JobRejected(
            f"the job has {len(specs)} tasks, over the limit of {limits.max_tasks_per_job}; "
            "split it into several jobs or raise --max-tasks-per-job",
            too_large=True,
        )
    ids: set[str] = set()
    count = len(specs)
    for index, spec in enumerate(specs):
        _check_task(index, spec, limits)
        if spec.trace_context and spec.trace_context is not trace_context:
            problem = trace_context_problem(spec.trace_context)
            if problem is not None:
                raise JobRejected(f"task {quote(spec.id)}: {problem}")
        if len(spec.depends_on) > count:
            raise JobRejected(
                f"task {quote(spec.id)} has {len(spec.depends_on)} depends_on entries, more than "
                f"the job has tasks ({count}); name each dependency once"
            )
        if spec.id in ids:
            raise JobRejected(
                f"task id {quote(spec.id)} appears more than once; task ids must be unique"
            )
        ids.add(spec.id)
    for spec in specs:
        for dep in spec.depends_on:
            if dep == spec.id:
                raise JobRejected(
                    f"task {quote(spec.id)} depends on itself; remove it from depends_on"
                )
            if dep not in ids:
                raise JobRejected(
                    f"task {quote(spec.id)} depends on {quote(dep)}, which is not a task of "
                    "this job"
                )
        if spec.inputs:
            _check_inputs(spec)
    cycle = find_cycle(specs)
    if cycle:
        raise JobRejected(f"the dependencies form a cycle: {_cycle_text(cycle)}")


def _check_inputs(spec: TaskSpec) -> None:
    """A task's named inputs: each a dependency of it, once, and not beside inputs_all."""
    if spec.inputs_all:
        raise JobRejected(
            f"task {quote(spec.id)} asks for all its inputs and names some too; give one or "
            "the other"
        )
    seen: set[str] = set()
    deps = frozenset(spec.depends_on)
    for name in spec.inputs:
        if name not in deps:
            raise JobRejected(
                f"task {quote(spec.id)} asks for the output of {quote(name)}, which is not in its "
                "depends_on; add it there or remove it from inputs"
            )
        if name in seen:
            raise JobRejected(
                f"task {quote(spec.id)} names input {quote(name)} twice; name it once"
            )
        seen.add(name)


def _check_task(index: int, spec: TaskSpec, limits: Limits) -> None:
    if not spec.id:
        raise JobRejected(f"task #{index} has no id; give every task a unique id")
    problem = None if _name_ok(spec.id) else name_problem(spec.id, "id")
    if problem is not None:
        raise JobRejected(f"task #{index}: {problem}")
    if _task_in_order(spec, limits):
        return  # the usual case: no sentence made (quoting the id alone cost 0.2 us a task)
    name = quote(spec.id)
    if not spec.handler:
        raise JobRejected(f"task {name} names no handler; set handler to an installed handler")
    if len(spec.labels) > MAX_LABELS or len(spec.rate_keys) > MAX_RATE_KEYS:
        for problem in (
            count_problem(len(spec.labels), "labels", MAX_LABELS),
            count_problem(len(spec.rate_keys), "rate keys", MAX_RATE_KEYS),
        ):
            if problem is not None:
                raise JobRejected(f"task {name} has {problem}; send fewer")
    _check_names(name, spec)
    if not -MAX_PRIORITY <= spec.priority <= MAX_PRIORITY:
        raise JobRejected(
            f"task {name} has priority {spec.priority}; use -{MAX_PRIORITY} to {MAX_PRIORITY} "
            "(higher runs first)"
        )
    for field, value in (
        ("timeout_s", spec.timeout_s),
        ("schedule_to_start_s", spec.schedule_to_start_s),
        ("heartbeat_timeout_s", spec.heartbeat_timeout_s),
        ("est_tokens", spec.est_tokens),
        ("est_duration_s", spec.est_duration_s),
    ):
        # NaN passes every comparison below and would poison the timer and queue heaps.
        if not math.isfinite(value):
            raise JobRejected(f"task {name} has {field} {value!r}; use a finite number")
    if spec.timeout_s < 0:
        raise JobRejected(
            f"task {name} has a negative timeout ({spec.timeout_s} s); "
            "use a positive number of seconds, or 0 for the default"
        )
    if spec.schedule_to_start_s < 0 or spec.heartbeat_timeout_s < 0:
        raise JobRejected(f"task {name} has a negative schedule-to-start or heartbeat timeout")
    if not _seconds_in_range(spec.schedule_to_close_s, limits.max_deadline_s):
        raise JobRejected(
            f"task {name} has schedule_to_close_s {spec.schedule_to_close_s!r}; use a number "
            f"of seconds from 0 (no limit) to {limits.max_deadline_s:g}"
        )
    if spec.max_retries < -1 or spec.max_retries > limits.max_retries:
        raise JobRejected(
            f"task {name} asks for {spec.max_retries} retries; "
            f"use -1 for the default or 0 to {limits.max_retries}"
        )
    if len(spec.payload) > limits.max_payload_bytes:
        raise JobRejected(
            f"task {name} has a payload of {len(spec.payload)} bytes, over the limit of "
            f"{limits.max_payload_bytes} bytes; pass a reference (a URL or a key) instead, "
            "or raise --max-payload-bytes",
            too_large=True,
        )


def _task_in_order(spec: TaskSpec, limits: Limits) -> bool:
    """Whether :func:`_check_task` would find nothing wrong past the id, in one pass of
    comparisons (each false for NaN): True lets it skip the checks that name the problem."""
    return (
        bool(spec.handler)
        and len(spec.labels) <= MAX_LABELS
        and len(spec.rate_keys) <= MAX_RATE_KEYS
        and _names_ok(spec)
        and -MAX_PRIORITY <= spec.priority <= MAX_PRIORITY
        and 0.0 <= spec.timeout_s < _INF
        and 0.0 <= spec.schedule_to_start_s < _INF
        and 0.0 <= spec.heartbeat_timeout_s < _INF
        and -_INF < spec.est_tokens < _INF
        and -_INF < spec.est_duration_s < _INF
        and 0.0 <= spec.schedule_to_close_s <= limits.max_deadline_s
        and spec.schedule_to_close_s < _INF
        and -1 <= spec.max_retries <= limits.max_retries
        and len(spec.payload) <= limits.max_payload_bytes
    )


def _names_ok(spec: TaskSpec) -> bool:
    """The task's handler, tenant, rate keys and labels are bounded, printable names."""
    ok = _name_ok(spec.handler) and _name_ok(spec.tenant)
    for key in spec.rate_keys:
        ok = ok and _name_ok(key)
    for key, value in spec.labels.items():
        ok = ok and _name_ok(key) and _name_ok(value)
    return ok


def _check_names(name: str, spec: TaskSpec) -> None:
    """The task's handler, tenant, rate keys and labels: each a bounded, printable name."""
    if _names_ok(spec):
        return  # the usual case, without building a sentence's worth of pairs
    fields: list[tuple[str, str]] = [("handler", spec.handler), ("tenant", spec.tenant)]
    fields += [("rate key", key) for key in spec.rate_keys]
    for key, value in spec.labels.items():
        fields += [("label key", key), (f"value of label {quote(key, 32)}", value)]
    for field, value in fields:
        problem = name_problem(value, field)
        if problem is not None:
            raise JobRejected(f"task {name}: {problem}")


def _name_ok(value: str, most: int = MAX_NAME_BYTES) -> bool:
    """:func:`name_problem` is None, cheaply: a name of at most ``most / 4`` characters fits in
    ``most`` UTF-8 bytes without encoding it."""
    return (len(value) <= most >> 2 or len(value.encode("utf-8", "surrogatepass")) <= most) and (
        value.isprintable()
    )


def _cycle_text(cycle: Sequence[str]) -> str:
    """A cycle as "'a' -> 'b' -> 'a'; remove one of these edges", naming at most
    ``CYCLE_TASKS_SHOWN`` tasks of a long one (a 3,000-task cycle is one line, not 30 KB)."""
    if len(cycle) - 1 <= CYCLE_TASKS_SHOWN:
        path = " -> ".join(quote(t) for t in cycle)
        return f"{path}; remove one of these edges"
    shown = " -> ".join(quote(t) for t in cycle[:CYCLE_TASKS_SHOWN])
    return (
        f"{shown} -> ... ({len(cycle) - 1} tasks in all, back to {quote(cycle[0])}); "
        "remove one of its edges"
    )


def _seconds_in_range(value: float, most: float) -> bool:
    """True for a finite number of seconds from 0 to ``most`` (NaN and infinities are not)."""
    return math.isfinite(value) and 0.0 <= value <= most


def find_cycle(specs: Sequence[TaskSpec]) -> list[str]:
    """Return the task ids of one dependency cycle (first id repeated at the end), or []."""
    # Only tasks with dependencies can be on a cycle (a job without any, nearly every one,
    # costs one pass here).
    deps = {s.id: s.depends_on for s in specs if s.depends_on}
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        # Iterative DFS: deep chains must not hit the recursion limit.
        path: list[str] = [root]
        iters = [iter(deps[root])]
        colour[root] = grey
        while iters:
            dep = next(iters[-1], None)
            if dep is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            if dep not in colour:
                continue
            if colour[dep] == grey:
                return [*path[path.index(dep) :], dep]
            if colour[dep] == white:
                colour[dep] = grey
                path.append(dep)
                iters.append(iter(deps[dep]))
    return []
