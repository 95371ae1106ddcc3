"""Conversions between protobuf messages and the core's plain data. The only place in the
controller where both worlds meet, so the core never imports protobuf."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from deerflow_common.tracing import TRACEPARENT, context_dict
from deerflow_controller.core.model import (
    AttemptKey,
    CachePolicy,
    ErrorClass,
    ErrorKind,
    Event,
    HandlerTraits,
    SplitPolicy,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult
from deerflow_controller.service.inputs import InputPacker
from deerflow_protos import agent_pb2, client_pb2, common_pb2

_NO_STRINGS: dict[str, str] = {}


def job_trace_context(request: client_pb2.SubmitJobRequest) -> dict[str, str]:
    """A submitted job's own trace context (one dict, shared read-only by its tasks)."""
    tc = request.trace_context
    return context_dict(tc) if tc else _NO_STRINGS


def specs_from_request(
    request: client_pb2.SubmitJobRequest, job_tc: dict[str, str] | None = None
) -> list[TaskSpec]:
    """A submitted job's task specs; the job-level trace context ``job_tc`` (by default
    :func:`job_trace_context`) goes, as the same dict, to every task without one of its own."""
    if job_tc is None:
        job_tc = job_trace_context(request)
    return [spec_from_proto(t, job_tc) for t in request.tasks]


def spec_from_proto(t: common_pb2.TaskSpec, job_tc: dict[str, str] = _NO_STRINGS) -> TaskSpec:
    # Only the fields the submitter set are read (ListFields): reading each of the 21 fields
    # costs more than the rest of a task's conversion, and most tasks set three or four. The
    # empty defaults (one shared dict among them) are never mutated: the core only reads specs.
    values = _SPEC_DEFAULTS.copy()
    values[_SPEC_TRACE_CONTEXT] = job_tc
    for fd, value in t.ListFields():
        slot, convert = _SPEC_SLOTS[fd.number]
        values[slot] = value if convert is None else convert(value)
    return TaskSpec(*values)


_CACHE_POLICIES = frozenset(int(p) for p in CachePolicy)


def _cache_policy(value: int) -> CachePolicy:
    return CachePolicy(value) if value in _CACHE_POLICIES else CachePolicy.DEFAULT


def _split_policy(value: int) -> SplitPolicy:
    return SplitPolicy.NEVER if int(value) == SplitPolicy.NEVER else SplitPolicy.AUTO


def _spec_table() -> tuple[list[Any], dict[int, tuple[int, Callable[[Any], Any] | None]]]:
    """TaskSpec's positional values for a proto TaskSpec with no field set, and per proto
    field number: its position in TaskSpec and how a set value converts (None: as it is).
    Fields match by name; a proto field TaskSpec lacks fails the controller's start-up."""
    names = [f.name for f in dataclasses.fields(TaskSpec)]
    converts: dict[str, Callable[[Any], Any]] = {
        "depends_on": tuple,
        "rate_keys": tuple,
        "inputs": tuple,
        "labels": dict,
        "trace_context": context_dict,
        "cache": _cache_policy,
        "split": _split_policy,
    }
    unset = common_pb2.TaskSpec()
    defaults: list[Any] = []
    for name in names:
        if name in ("depends_on", "rate_keys", "inputs"):
            defaults.append(())
        elif name in ("labels", "trace_context"):
            defaults.append(_NO_STRINGS)
        elif name in ("cache", "split"):
            defaults.append(converts[name](getattr(unset, name)))
        else:
            defaults.append(getattr(unset, name))
    slots = {
        fd.number: (names.index(fd.name), converts.get(fd.name))
        for fd in common_pb2.TaskSpec.DESCRIPTOR.fields
    }
    return defaults, slots


_SPEC_DEFAULTS, _SPEC_SLOTS = _spec_table()
_SPEC_TRACE_CONTEXT = [f.name for f in dataclasses.fields(TaskSpec)].index("trace_context")


def error_to_proto(error: TaskError, out: common_pb2.TaskError) -> None:
    out.kind = int(error.kind)  # type: ignore[assignment]
    out.message = error.message
    out.retryable = error.retryable
    out.retry_after_s = error.retry_after_s
    if error.error_class:
        out.error_class = int(error.error_class)  # type: ignore[assignment]


def error_from_proto(e: common_pb2.TaskError) -> TaskError:
    kind = ErrorKind(e.kind) if e.kind in ErrorKind._value2member_map_ else ErrorKind.HANDLER_ERROR
    cls = ErrorClass(e.error_class) if e.error_class in _ERROR_CLASSES else ErrorClass.UNSPECIFIED
    return TaskError(kind, e.message, e.retryable, e.retry_after_s, cls)


_ERROR_CLASSES = frozenset(int(c) for c in ErrorClass)


def fill_event(ev: Event, out: common_pb2.TaskEvent) -> None:
    out.job_id = ev.job_id
    out.task_id = ev.task_id
    out.state = int(ev.state)  # type: ignore[assignment]
    out.seq = ev.seq
    out.attempt = ev.attempt
    out.agent_id = ev.agent_id
    out.time = ev.time
    if ev.output:
        out.output = ev.output
    if ev.error is not None:
        error_to_proto(ev.error, out.error)
    if ev.not_before:
        out.not_before = ev.not_before
    if ev.detail:
        out.detail = ev.detail
    if ev.cache_layer:
        out.cache_layer = ev.cache_layer
    if ev.predicted_s:
        out.predicted_s = ev.predicted_s
    if ev.state is TaskState.PROGRESS:
        out.progress = ev.progress


def progress_reports(
    batch: agent_pb2.ProgressBatch,
) -> dict[AttemptKey, tuple[float, str]]:
    """An agent's progress reports by attempt: (fraction 0-1, or -1 when unknown or not a
    finite number in range; message, cut to the agent's own limit)."""
    reports: dict[AttemptKey, tuple[float, str]] = {}
    for p in batch.progress:
        fraction = p.fraction
        if not (0.0 <= fraction <= 1.0):  # NaN, negative (unknown) or out of range
            fraction = -1.0
        reports[key_from_ref(p.ref)] = (fraction, p.message[:PROGRESS_MESSAGE_CHARS])
    return reports


PROGRESS_MESSAGE_CHARS = 256
"""Longest progress message kept (the agent's ``TaskContext`` cuts at the same length)."""


def traits_from_proto(h: agent_pb2.HandlerInfo) -> HandlerTraits:
    return HandlerTraits(
        kind="cpu" if h.kind == agent_pb2.CPU else "io",
        cacheable=h.cacheable,
        nondeterministic=h.nondeterministic,
        similarity_field=h.similarity_field,
        similarity_threshold=h.similarity_threshold,
        cache_ttl_s=h.cache_ttl_s,
        items_field=h.items_field,
        default_duration_s=h.default_duration_s,
        default_cpu_s=h.default_cpu_s,
        default_memory_bytes=h.default_memory_bytes,
    )


def key_from_ref(ref: agent_pb2.AttemptRef) -> AttemptKey:
    return (ref.job_id, ref.task_id, ref.attempt)


def fill_ref(key: AttemptKey, out: agent_pb2.AttemptRef) -> None:
    out.job_id, out.task_id, out.attempt = key


def assignment_batch(
    epoch: int,
    tasks: Sequence[Task],
    traceparents: Sequence[str] | None = None,
    inputs: InputPacker | None = None,
) -> agent_pb2.ControllerMessage:
    """One agent's assignments. ``traceparents`` (one per task, from the tracer) name the spans
    the agent's spans continue; without them each assignment carries its submitter's context.
    ``inputs`` adds the dependencies' outputs that tasks asked for (none without it)."""
    if inputs is not None:
        inputs.start_batch()
    msg = agent_pb2.ControllerMessage()
    batch = msg.assignments
    batch.epoch = epoch
    add = batch.assignments.add
    for i, task in enumerate(tasks):
        spec = task.spec
        stc = spec.trace_context
        # The traceparent has a field of its own, set as the message is made (a map entry, or
        # setting the field afterwards, costs several times more).
        tp = traceparents[i] if traceparents is not None else stc.get(TRACEPARENT, "")
        a = add(
            handler=spec.handler,
            payload=spec.payload,
            timeout_s=task.timeout_s,
            traceparent=tp,
            ref={"job_id": task.job.id, "task_id": spec.id, "attempt": task.attempt},
        )
        if len(stc) > 1 or (stc and TRACEPARENT not in stc):
            # The rare other entries (tracestate and the like) go in the map.
            tc = a.trace_context
            for k, v in stc.items():  # map.update() is the slow generic one
                if k != TRACEPARENT:
                    tc[k] = v
        if inputs is not None:
            src = spec if task.parent is None else task.parent.spec
            if src.inputs or src.inputs_all:
                inputs.fill(task, a)
    return msg


def cancel_batch(keys: Iterable[AttemptKey]) -> agent_pb2.ControllerMessage:
    msg = agent_pb2.ControllerMessage()
    add = msg.cancels.refs.add
    for job_id, task_id, attempt in keys:
        add(job_id=job_id, task_id=task_id, attempt=attempt)
    return msg


def results_from_proto(batch: agent_pb2.ResultBatch) -> list[AttemptResult]:
    out = []
    for r in batch.results:
        ref = r.ref
        key = (ref.job_id, ref.task_id, ref.attempt)
        meta = dict(r.metadata) if r.metadata else _NO_STRINGS
        run_s = r.finished_at - r.started_at if r.started_at and r.finished_at else 0.0
        if r.ok:
            out.append(
                AttemptResult(key, True, r.output, None, False, meta, run_s, r.cpu_s, r.rss_bytes)
            )
        else:
            err = error_from_proto(r.error) if r.HasField("error") else None
            out.append(
                AttemptResult(key, False, b"", err, r.cancelled, meta, run_s, r.cpu_s, r.rss_bytes)
            )
    return out
