"""What SDK users build and receive: tasks to submit, results and events that come back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from deerflow_controller.client._errors import TaskFailedError
from deerflow_protos import common_pb2

_F = TypeVar("_F")

INPUTS_ALL = "all"
"""``Task.inputs`` value: the handler reads every dependency's output."""

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"})

_STATE_NAMES: dict[int, str] = {v: k for k, v in common_pb2.TaskState.items()}
_KIND_NAMES: dict[int, str] = {v: k for k, v in common_pb2.ErrorKind.items()}
TERMINAL_NUMBERS = frozenset(common_pb2.TaskState.Value(name) for name in TERMINAL)
"""The terminal states as their wire numbers."""
_NO_ERROR = ("", "")


def _state_name(state: int) -> str:
    """A wire state's name (from a dict; an unknown number raises ValueError from Name())."""
    return _STATE_NAMES.get(state) or common_pb2.TaskState.Name(state)


def _error_of(ev: common_pb2.TaskEvent) -> tuple[str, str]:
    """A wire event's error kind and message ("" and "" without one). Names come from a dict,
    not the enum wrapper's Name() (an unknown number still raises ValueError from Name())."""
    if not ev.HasField("error"):
        return _NO_ERROR
    error = ev.error
    return _KIND_NAMES.get(error.kind) or common_pb2.ErrorKind.Name(error.kind), error.message


def _fast_init(cls: type[_F]) -> type[_F]:
    """Give the frozen dataclass ``cls`` an ``__init__`` with the same parameters, defaults
    and instance dict as the generated one, but that fills the instance dict in one update:
    the generated one sets each field through ``object.__setattr__``, a call a field (about
    1.5 us for a 19-field Task, where the update costs a third). These objects are made once
    per task a client submits or reads. Fields with a default_factory get a fresh value per
    instance, as before. Only plain fields are supported (no InitVar, kw_only or
    __post_init__): anything else is refused at import."""
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__; _fast_init does not run it")
    params: list[str] = []
    body: list[str] = []
    names: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.kw_only or not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: _fast_init supports plain fields only")
        if f.default is not dataclasses.MISSING:
            names[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f"    if {f.name} is _MISSING: {f.name} = _f_{f.name}()")
        else:
            params.append(f.name)
    entries = ", ".join(f"{f.name!r}: {f.name}" for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    body.append(f"    self.__dict__.update({{{entries}}})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(source, names)  # as dataclasses itself makes __init__
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010  (mypy refuses assigning to a method)
    return cls


def encode_payload(payload: object) -> bytes:
    """bytes pass as they are, str as UTF-8; anything else is encoded as JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return _compact_json(payload).encode()


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


@_fast_init
@dataclass(frozen=True)
class Task:
    """One task of a job. ``id`` is unique in the job and is its idempotency key.

    ``payload`` is data for the handler: bytes as given, str as UTF-8, anything else as JSON.
    ``timeout_s`` is the start-to-close timeout of one attempt (0 = controller default);
    ``max_retries`` -1 means the controller's default. ``priority``: higher runs first, from
    -1,000,000 to 1,000,000. Names (``id``, ``handler``, ``tenant``, rate keys, label keys and
    values) are at most 256 UTF-8 bytes of printable characters; the controller refuses others
    with InvalidJobError naming the field."""

    id: str
    handler: str
    payload: object = b""
    priority: int = 0
    depends_on: Sequence[str] = ()
    timeout_s: float = 0.0
    max_retries: int = -1
    labels: Mapping[str, str] = field(default_factory=dict)
    rate_keys: Sequence[str] = ()
    """Cluster-wide budgets this task draws on, e.g. ("llm/my-key/gpt-4o",)."""
    est_tokens: float = 0.0
    """Estimated tokens (LLM calls); corrected from reported usage."""
    tenant: str = ""
    """Within a priority, tenants take turns in each handler's queue and on each rate key."""
    schedule_to_start_s: float = 0.0
    """Fail the task TIMED_OUT if no agent starts an attempt within this (0 = no limit)."""
    heartbeat_timeout_s: float = 0.0
    """A running attempt that reports no progress for this long is retried (0 = none)."""
    cache: str = "default"
    """Result cache: "default" (as the handler declares), "off", "on" (even for nondeterministic
    handlers) or "refresh" (run and overwrite the cached entry)."""
    split: bool = True
    """Let the controller split a task whose handler declares items (False = run it whole)."""
    partial_results: bool = False
    """For a split task: succeed with the parts that succeeded instead of failing fast."""
    est_duration_s: float = 0.0
    """Your estimate of one attempt's run time (0 = let the controller predict it)."""
    schedule_to_close_s: float = 0.0
    """The longest the task may take over all its attempts, retries and waits included, from
    when it is first ready; then it ends TIMED_OUT (SCHEDULE_TO_CLOSE_TIMEOUT) and its running
    attempt is cancelled (0 = no limit; at most 7 days)."""
    inputs: str | Sequence[str] = ()
    """Which dependencies' outputs the handler reads (``ctx.inputs`` on the agent): ``()``
    none (the default), ``"all"`` every dependency's, or a sequence of ids, each of which must
    be in ``depends_on`` (else the submit fails INVALID_ARGUMENT). The handler sees them in
    ``depends_on`` order. See docs/INPUTS.md for the limits and how large outputs travel."""

    def to_proto(self) -> common_pb2.TaskSpec:
        spec = common_pb2.TaskSpec()
        self.fill_proto(spec)
        return spec

    def fill_proto(self, spec: common_pb2.TaskSpec) -> None:
        """Write this task into ``spec`` (e.g. ``request.tasks.add()``, which avoids a copy)."""
        spec.id = self.id
        spec.handler = self.handler
        spec.payload = encode_payload(self.payload)
        if self.priority:
            try:
                spec.priority = self.priority
            except ValueError:  # protobuf's own words ("Value out of range") name no field
                raise ValueError(
                    f"task {self.id!r}: priority {self.priority} does not fit the wire's "
                    "int32; use -1000000 to 1000000 (higher runs first)"
                ) from None
        if self.timeout_s:
            spec.timeout_s = self.timeout_s
        spec.max_retries = self.max_retries
        # Only touch repeated and map fields when there is something to put in them.
        if self.depends_on:
            spec.depends_on.extend(self.depends_on)
        if self.labels:
            spec.labels.update(self.labels)
        if self.rate_keys:
            spec.rate_keys.extend(self.rate_keys)
        if self.est_tokens:
            spec.est_tokens = self.est_tokens
        if self.tenant:
            spec.tenant = self.tenant
        if self.schedule_to_start_s:
            spec.schedule_to_start_s = self.schedule_to_start_s
        if self.heartbeat_timeout_s:
            spec.heartbeat_timeout_s = self.heartbeat_timeout_s
        if self.cache != "default":
            try:
                spec.cache = _CACHE_POLICIES[self.cache]
            except KeyError:
                raise ValueError(
                    f"task {self.id!r}: cache must be one of {', '.join(_CACHE_POLICIES)}, "
                    f"got {self.cache!r}"
                ) from None
        if not self.split:
            spec.split = common_pb2.SPLIT_NEVER
        if self.partial_results:
            spec.partial_results = True
        if self.est_duration_s:
            spec.est_duration_s = self.est_duration_s
        if self.schedule_to_close_s:
            spec.schedule_to_close_s = self.schedule_to_close_s
        inputs = self.inputs
        if inputs:
            if inputs == INPUTS_ALL:
                spec.inputs_all = True
            elif isinstance(inputs, str | bytes):
                raise ValueError(
                    f"task {self.id!r}: inputs must be {INPUTS_ALL!r} or a list of dependency "
                    f"ids, got {inputs!r}"
                )
            else:
                spec.inputs.extend(inputs)


_CACHE_POLICIES: dict[str, common_pb2.CachePolicy] = {
    "default": common_pb2.CACHE_DEFAULT,
    "off": common_pb2.CACHE_OFF,
    "on": common_pb2.CACHE_ON,
    "refresh": common_pb2.CACHE_REFRESH,
}


@_fast_init
@dataclass(frozen=True)
class TaskEvent:
    """A state change of a task, as streamed by the controller."""

    job_id: str
    task_id: str
    state: str
    seq: int
    attempt: int
    agent_id: str
    time: float
    output: bytes = b""
    error_kind: str = ""
    error: str = ""
    not_before: float = 0.0
    detail: str = ""
    """Why the controller made this transition (cache hit, circuit open, moved, split...)."""
    cache_layer: str = ""
    """On SUCCEEDED from the result cache: exact, similarity or preload."""
    predicted_s: float = 0.0
    """On DISPATCHED: the controller's prediction of the attempt's run time on its agent."""
    progress: float = -1.0
    """On PROGRESS (the running handler called ``ctx.progress()``; at most one such event a
    second per task): how far it got, 0-1, or -1 when it did not say; its message is
    ``detail``."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_proto(cls, ev: common_pb2.TaskEvent) -> TaskEvent:
        # Once per event a client reads (the stream's hot path).
        state = ev.state
        kind, message = _error_of(ev)
        return cls(
            ev.job_id,
            ev.task_id,
            _state_name(state),
            ev.seq,
            ev.attempt,
            ev.agent_id,
            ev.time,
            ev.output,
            kind,
            message,
            ev.not_before,
            ev.detail,
            ev.cache_layer,
            ev.predicted_s,
            ev.progress if state == common_pb2.PROGRESS else -1.0,
        )


@_fast_init
@dataclass(frozen=True)
class TaskResult:
    """The one terminal outcome of a task."""

    job_id: str
    task_id: str
    state: str
    output: bytes
    attempt: int
    agent_id: str
    error_kind: str = ""
    error: str = ""
    detail: str = ""
    cache_layer: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "SUCCEEDED"

    def raise_for_error(self) -> TaskResult:
        """Return self when the task succeeded, else raise :class:`TaskFailedError`."""
        if not self.ok:
            raise TaskFailedError(
                self.job_id, self.task_id, self.state, self.error_kind, self.error
            )
        return self

    def json(self) -> Any:
        """The output decoded as JSON (raises TaskFailedError if the task did not succeed)."""
        return json.loads(self.raise_for_error().output)

    @classmethod
    def from_proto(cls, ev: common_pb2.TaskEvent) -> TaskResult:
        """What ``from_event(TaskEvent.from_proto(ev))`` gives, without the TaskEvent: once
        per result a client reads (the results stream's hot path)."""
        kind, message = _error_of(ev)
        return cls(
            ev.job_id,
            ev.task_id,
            _state_name(ev.state),
            ev.output,
            ev.attempt,
            ev.agent_id,
            kind,
            message,
            ev.detail,
            ev.cache_layer,
        )

    @classmethod
    def from_event(cls, ev: TaskEvent) -> TaskResult:
        return cls(
            ev.job_id,
            ev.task_id,
            ev.state,
            ev.output,
            ev.attempt,
            ev.agent_id,
            ev.error_kind,
            ev.error,
            ev.detail,
            ev.cache_layer,
        )
