from deerflow_protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandlerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HANDLER_KIND_UNSPECIFIED: _ClassVar[HandlerKind]
    IO: _ClassVar[HandlerKind]
    CPU: _ClassVar[HandlerKind]
HANDLER_KIND_UNSPECIFIED: HandlerKind
IO: HandlerKind
CPU: HandlerKind

class HandlerInfo(_message.Message):
    __slots__ = ("name", "kind", "slots", "cacheable", "nondeterministic", "similarity_field", "similarity_threshold", "cache_ttl_s", "items_field", "default_duration_s", "default_cpu_s", "default_memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CACHEABLE_FIELD_NUMBER: _ClassVar[int]
    NONDETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CACHE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CPU_S_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: HandlerKind
    slots: int
    cacheable: bool
    nondeterministic: bool
    similarity_field: str
    similarity_threshold: float
    cache_ttl_s: float
    items_field: str
    default_duration_s: float
    default_cpu_s: float
    default_memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[HandlerKind, str]] = ..., slots: _Optional[int] = ..., cacheable: _Optional[bool] = ..., nondeterministic: _Optional[bool] = ..., similarity_field: _Optional[str] = ..., similarity_threshold: _Optional[float] = ..., cache_ttl_s: _Optional[float] = ..., items_field: _Optional[str] = ..., default_duration_s: _Optional[float] = ..., default_cpu_s: _Optional[float] = ..., default_memory_bytes: _Optional[int] = ...) -> None: ...

class AttemptRef(_message.Message):
    __slots__ = ("job_id", "task_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "token", "handlers", "labels", "slots", "cpu_count", "memory_bytes", "running", "max_epoch_seen", "version", "instance")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCH_SEEN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    token: str
    handlers: _containers.RepeatedCompositeFieldContainer[HandlerInfo]
    labels: _containers.ScalarMap[str, str]
    slots: int
    cpu_count: int
    memory_bytes: int
    running: _containers.RepeatedCompositeFieldContainer[AttemptRef]
    max_epoch_seen: int
    version: str
    instance: str
    def __init__(self, agent_id: _Optional[str] = ..., token: _Optional[str] = ..., handlers: _Optional[_Iterable[_Union[HandlerInfo, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., cpu_count: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., running: _Optional[_Iterable[_Union[AttemptRef, _Mapping]]] = ..., max_epoch_seen: _Optional[int] = ..., version: _Optional[str] = ..., instance: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("cpu_percent", "memory_percent", "running", "free_slots", "queued", "handler_latency_s", "process_cpu_percent")
    class HandlerLatencySEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    HANDLER_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    PROCESS_CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_percent: float
    running: int
    free_slots: int
    queued: int
    handler_latency_s: _containers.ScalarMap[str, float]
    process_cpu_percent: float
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., running: _Optional[int] = ..., free_slots: _Optional[int] = ..., queued: _Optional[int] = ..., handler_latency_s: _Optional[_Mapping[str, float]] = ..., process_cpu_percent: _Optional[float] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("ref", "time")
    REF_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    time: float
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., time: _Optional[float] = ...) -> None: ...

class StartedBatch(_message.Message):
    __slots__ = ("started",)
    STARTED_FIELD_NUMBER: _ClassVar[int]
    started: _containers.RepeatedCompositeFieldContainer[Started]
    def __init__(self, started: _Optional[_Iterable[_Union[Started, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("ref", "ok", "output", "error", "started_at", "finished_at", "cancelled", "metadata", "cpu_s", "rss_bytes")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    ok: bool
    output: bytes
    error: _common_pb2.TaskError
    started_at: float
    finished_at: float
    cancelled: bool
    metadata: _containers.ScalarMap[str, str]
    cpu_s: float
    rss_bytes: int
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., ok: _Optional[bool] = ..., output: _Optional[bytes] = ..., error: _Optional[_Union[_common_pb2.TaskError, _Mapping]] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., cancelled: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., cpu_s: _Optional[float] = ..., rss_bytes: _Optional[int] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("ref", "fraction", "message")
    REF_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    fraction: float
    message: str
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., fraction: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class ProgressBatch(_message.Message):
    __slots__ = ("progress",)
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    progress: _containers.RepeatedCompositeFieldContainer[Progress]
    def __init__(self, progress: _Optional[_Iterable[_Union[Progress, _Mapping]]] = ...) -> None: ...

class Draining(_message.Message):
    __slots__ = ("not_started",)
    NOT_STARTED_FIELD_NUMBER: _ClassVar[int]
    not_started: _containers.RepeatedCompositeFieldContainer[AttemptRef]
    def __init__(self, not_started: _Optional[_Iterable[_Union[AttemptRef, _Mapping]]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "started", "results", "draining", "progress")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    started: StartedBatch
    results: ResultBatch
    draining: Draining
    progress: ProgressBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., started: _Optional[_Union[StartedBatch, _Mapping]] = ..., results: _Optional[_Union[ResultBatch, _Mapping]] = ..., draining: _Optional[_Union[Draining, _Mapping]] = ..., progress: _Optional[_Union[ProgressBatch, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("epoch", "heartbeat_interval_s", "prefetch", "controller_id")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    heartbeat_interval_s: float
    prefetch: int
    controller_id: str
    def __init__(self, epoch: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ..., prefetch: _Optional[int] = ..., controller_id: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("ref", "handler", "payload", "timeout_s", "trace_context", "traceparent", "inputs")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    handler: str
    payload: bytes
    timeout_s: float
    trace_context: _containers.ScalarMap[str, str]
    traceparent: str
    inputs: _containers.RepeatedCompositeFieldContainer[TaskInput]
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., handler: _Optional[str] = ..., payload: _Optional[bytes] = ..., timeout_s: _Optional[float] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., traceparent: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TaskInput, _Mapping]]] = ...) -> None: ...

class TaskInput(_message.Message):
    __slots__ = ("task_id", "data", "size", "reference", "sha256")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    data: bytes
    size: int
    reference: bool
    sha256: str
    def __init__(self, task_id: _Optional[str] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ..., reference: _Optional[bool] = ..., sha256: _Optional[str] = ...) -> None: ...

class FetchInputRequest(_message.Message):
    __slots__ = ("ref", "task_id", "offset", "agent_id", "instance")
    REF_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ref: AttemptRef
    task_id: str
    offset: int
    agent_id: str
    instance: str
    def __init__(self, ref: _Optional[_Union[AttemptRef, _Mapping]] = ..., task_id: _Optional[str] = ..., offset: _Optional[int] = ..., agent_id: _Optional[str] = ..., instance: _Optional[str] = ...) -> None: ...

class InputChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class AssignmentBatch(_message.Message):
    __slots__ = ("epoch", "assignments")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, epoch: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class CancelBatch(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedCompositeFieldContainer[AttemptRef]
    def __init__(self, refs: _Optional[_Iterable[_Union[AttemptRef, _Mapping]]] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ControllerMessage(_message.Message):
    __slots__ = ("welcome", "assignments", "cancels", "drain")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCELS_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assignments: AssignmentBatch
    cancels: CancelBatch
    drain: Drain
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assignments: _Optional[_Union[AssignmentBatch, _Mapping]] = ..., cancels: _Optional[_Union[CancelBatch, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...
