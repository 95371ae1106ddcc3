from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    PENDING: _ClassVar[TaskState]
    QUEUED: _ClassVar[TaskState]
    THROTTLED: _ClassVar[TaskState]
    DISPATCHED: _ClassVar[TaskState]
    RUNNING: _ClassVar[TaskState]
    SUCCEEDED: _ClassVar[TaskState]
    FAILED: _ClassVar[TaskState]
    CANCELLED: _ClassVar[TaskState]
    TIMED_OUT: _ClassVar[TaskState]
    RETRYING: _ClassVar[TaskState]
    PROGRESS: _ClassVar[TaskState]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    HANDLER_ERROR: _ClassVar[ErrorKind]
    UNKNOWN_HANDLER: _ClassVar[ErrorKind]
    DEPENDENCY_FAILED: _ClassVar[ErrorKind]
    TIMEOUT: _ClassVar[ErrorKind]
    AGENT_LOST: _ClassVar[ErrorKind]
    CANCELLED_BY_CLIENT: _ClassVar[ErrorKind]
    FATAL: _ClassVar[ErrorKind]
    SPLIT_ERROR: _ClassVar[ErrorKind]
    SCHEDULE_TIMEOUT: _ClassVar[ErrorKind]
    HEARTBEAT_TIMEOUT: _ClassVar[ErrorKind]
    CIRCUIT_OPEN: _ClassVar[ErrorKind]
    SCHEDULE_TO_CLOSE_TIMEOUT: _ClassVar[ErrorKind]
    JOB_DEADLINE_EXCEEDED: _ClassVar[ErrorKind]
    RESOURCE_EXHAUSTED: _ClassVar[ErrorKind]

class ErrorClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CLASS_UNSPECIFIED: _ClassVar[ErrorClass]
    CLASS_TRANSIENT: _ClassVar[ErrorClass]
    CLASS_RATE_LIMITED: _ClassVar[ErrorClass]
    CLASS_FATAL: _ClassVar[ErrorClass]
    CLASS_TIMEOUT: _ClassVar[ErrorClass]
    CLASS_SOFT: _ClassVar[ErrorClass]

class CachePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_DEFAULT: _ClassVar[CachePolicy]
    CACHE_OFF: _ClassVar[CachePolicy]
    CACHE_ON: _ClassVar[CachePolicy]
    CACHE_REFRESH: _ClassVar[CachePolicy]

class SplitPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_AUTO: _ClassVar[SplitPolicy]
    SPLIT_NEVER: _ClassVar[SplitPolicy]
TASK_STATE_UNSPECIFIED: TaskState
PENDING: TaskState
QUEUED: TaskState
THROTTLED: TaskState
DISPATCHED: TaskState
RUNNING: TaskState
SUCCEEDED: TaskState
FAILED: TaskState
CANCELLED: TaskState
TIMED_OUT: TaskState
RETRYING: TaskState
PROGRESS: TaskState
ERROR_KIND_UNSPECIFIED: ErrorKind
HANDLER_ERROR: ErrorKind
UNKNOWN_HANDLER: ErrorKind
DEPENDENCY_FAILED: ErrorKind
TIMEOUT: ErrorKind
AGENT_LOST: ErrorKind
CANCELLED_BY_CLIENT: ErrorKind
FATAL: ErrorKind
SPLIT_ERROR: ErrorKind
SCHEDULE_TIMEOUT: ErrorKind
HEARTBEAT_TIMEOUT: ErrorKind
CIRCUIT_OPEN: ErrorKind
SCHEDULE_TO_CLOSE_TIMEOUT: ErrorKind
JOB_DEADLINE_EXCEEDED: ErrorKind
RESOURCE_EXHAUSTED: ErrorKind
ERROR_CLASS_UNSPECIFIED: ErrorClass
CLASS_TRANSIENT: ErrorClass
CLASS_RATE_LIMITED: ErrorClass
CLASS_FATAL: ErrorClass
CLASS_TIMEOUT: ErrorClass
CLASS_SOFT: ErrorClass
CACHE_DEFAULT: CachePolicy
CACHE_OFF: CachePolicy
CACHE_ON: CachePolicy
CACHE_REFRESH: CachePolicy
SPLIT_AUTO: SplitPolicy
SPLIT_NEVER: SplitPolicy

class TaskError(_message.Message):
    __slots__ = ("kind", "message", "retryable", "retry_after_s", "error_class")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    message: str
    retryable: bool
    retry_after_s: float
    error_class: ErrorClass
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after_s: _Optional[float] = ..., error_class: _Optional[_Union[ErrorClass, str]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("id", "handler", "payload", "priority", "depends_on", "timeout_s", "max_retries", "labels", "schedule_to_start_s", "heartbeat_timeout_s", "trace_context", "rate_keys", "est_tokens", "tenant", "cache", "split", "partial_results", "est_duration_s", "schedule_to_close_s", "inputs_all", "inputs")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_TO_START_S_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    RATE_KEYS_FIELD_NUMBER: _ClassVar[int]
    EST_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESULTS_FIELD_NUMBER: _ClassVar[int]
    EST_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_TO_CLOSE_S_FIELD_NUMBER: _ClassVar[int]
    INPUTS_ALL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    handler: str
    payload: bytes
    priority: int
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    timeout_s: float
    max_retries: int
    labels: _containers.ScalarMap[str, str]
    schedule_to_start_s: float
    heartbeat_timeout_s: float
    trace_context: _containers.ScalarMap[str, str]
    rate_keys: _containers.RepeatedScalarFieldContainer[str]
    est_tokens: float
    tenant: str
    cache: CachePolicy
    split: SplitPolicy
    partial_results: bool
    est_duration_s: float
    schedule_to_close_s: float
    inputs_all: bool
    inputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., handler: _Optional[str] = ..., payload: _Optional[bytes] = ..., priority: _Optional[int] = ..., depends_on: _Optional[_Iterable[str]] = ..., timeout_s: _Optional[float] = ..., max_retries: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., schedule_to_start_s: _Optional[float] = ..., heartbeat_timeout_s: _Optional[float] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., rate_keys: _Optional[_Iterable[str]] = ..., est_tokens: _Optional[float] = ..., tenant: _Optional[str] = ..., cache: _Optional[_Union[CachePolicy, str]] = ..., split: _Optional[_Union[SplitPolicy, str]] = ..., partial_results: _Optional[bool] = ..., est_duration_s: _Optional[float] = ..., schedule_to_close_s: _Optional[float] = ..., inputs_all: _Optional[bool] = ..., inputs: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("job_id", "task_id", "state", "seq", "attempt", "agent_id", "time", "output", "error", "not_before", "detail", "cache_layer", "predicted_s", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CACHE_LAYER_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_S_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    state: TaskState
    seq: int
    attempt: int
    agent_id: str
    time: float
    output: bytes
    error: TaskError
    not_before: float
    detail: str
    cache_layer: str
    predicted_s: float
    progress: float
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., seq: _Optional[int] = ..., attempt: _Optional[int] = ..., agent_id: _Optional[str] = ..., time: _Optional[float] = ..., output: _Optional[bytes] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., not_before: _Optional[float] = ..., detail: _Optional[str] = ..., cache_layer: _Optional[str] = ..., predicted_s: _Optional[float] = ..., progress: _Optional[float] = ...) -> None: ...

class TaskEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[TaskEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[TaskEvent, _Mapping]]] = ...) -> None: ...
