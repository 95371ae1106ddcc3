from deerflow_protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALL: _ClassVar[EventFilter]
    TERMINAL: _ClassVar[EventFilter]
ALL: EventFilter
TERMINAL: EventFilter

class SubmitJobRequest(_message.Message):
    __slots__ = ("job_id", "tasks", "name", "trace_context", "deadline_s", "accepted_at", "watching")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    WATCHING_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tasks: _containers.RepeatedCompositeFieldContainer[_common_pb2.TaskSpec]
    name: str
    trace_context: _containers.ScalarMap[str, str]
    deadline_s: float
    accepted_at: float
    watching: bool
    def __init__(self, job_id: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_common_pb2.TaskSpec, _Mapping]]] = ..., name: _Optional[str] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., deadline_s: _Optional[float] = ..., accepted_at: _Optional[float] = ..., watching: _Optional[bool] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job_id", "accepted", "duplicate")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    accepted: int
    duplicate: bool
    def __init__(self, job_id: _Optional[str] = ..., accepted: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq", "filter", "wait_for_submit_s")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_SUBMIT_S_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    filter: EventFilter
    wait_for_submit_s: float
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., filter: _Optional[_Union[EventFilter, str]] = ..., wait_for_submit_s: _Optional[float] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "task_ids", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., task_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: int
    def __init__(self, cancelled: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("job_id", "name", "total", "by_state", "done", "submitted_at", "finished_at")
    class ByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BY_STATE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    total: int
    by_state: _containers.ScalarMap[str, int]
    done: bool
    submitted_at: float
    finished_at: float
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., total: _Optional[int] = ..., by_state: _Optional[_Mapping[str, int]] = ..., done: _Optional[bool] = ..., submitted_at: _Optional[float] = ..., finished_at: _Optional[float] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("job_id", "task_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("job_id", "task_id", "handler", "state", "attempts", "agent_id", "output", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    handler: str
    state: _common_pb2.TaskState
    attempts: int
    agent_id: str
    output: bytes
    error: _common_pb2.TaskError
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., handler: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., attempts: _Optional[int] = ..., agent_id: _Optional[str] = ..., output: _Optional[bytes] = ..., error: _Optional[_Union[_common_pb2.TaskError, _Mapping]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("call", "submit", "stop", "filter")
    CALL_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    call: int
    submit: SubmitJobRequest
    stop: SessionStop
    filter: EventFilter
    def __init__(self, call: _Optional[int] = ..., submit: _Optional[_Union[SubmitJobRequest, _Mapping]] = ..., stop: _Optional[_Union[SessionStop, _Mapping]] = ..., filter: _Optional[_Union[EventFilter, str]] = ...) -> None: ...

class SessionStop(_message.Message):
    __slots__ = ("cancel_job",)
    CANCEL_JOB_FIELD_NUMBER: _ClassVar[int]
    cancel_job: bool
    def __init__(self, cancel_job: _Optional[bool] = ...) -> None: ...

class SessionReply(_message.Message):
    __slots__ = ("call", "accepted", "events", "end")
    CALL_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    call: int
    accepted: SubmitJobResponse
    events: _common_pb2.TaskEventBatch
    end: SessionEnd
    def __init__(self, call: _Optional[int] = ..., accepted: _Optional[_Union[SubmitJobResponse, _Mapping]] = ..., events: _Optional[_Union[_common_pb2.TaskEventBatch, _Mapping]] = ..., end: _Optional[_Union[SessionEnd, _Mapping]] = ...) -> None: ...

class SessionEnd(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
