from deerflow_protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListJobsRequest(_message.Message):
    __slots__ = ("limit", "cursor", "state")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    limit: int
    cursor: str
    state: str
    def __init__(self, limit: _Optional[int] = ..., cursor: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class JobSummary(_message.Message):
    __slots__ = ("job_id", "name", "state", "total", "tasks_by_state", "submitted_at", "finished_at", "age_s", "tenant")
    class TasksByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TASKS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    state: str
    total: int
    tasks_by_state: _containers.ScalarMap[str, int]
    submitted_at: float
    finished_at: float
    age_s: float
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., total: _Optional[int] = ..., tasks_by_state: _Optional[_Mapping[str, int]] = ..., submitted_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., age_s: _Optional[float] = ..., tenant: _Optional[str] = ...) -> None: ...

class JobList(_message.Message):
    __slots__ = ("jobs", "next_cursor", "held")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobSummary]
    next_cursor: str
    held: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobSummary, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., held: _Optional[int] = ...) -> None: ...

class GetJobDetailRequest(_message.Message):
    __slots__ = ("job_id", "task_limit", "task_offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TASK_OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_limit: int
    task_offset: int
    def __init__(self, job_id: _Optional[str] = ..., task_limit: _Optional[int] = ..., task_offset: _Optional[int] = ...) -> None: ...

class AttemptSpan(_message.Message):
    __slots__ = ("attempt", "agent_id", "dispatched_at", "started_at", "ended_at", "outcome", "predicted_s")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_S_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    agent_id: str
    dispatched_at: float
    started_at: float
    ended_at: float
    outcome: str
    predicted_s: float
    def __init__(self, attempt: _Optional[int] = ..., agent_id: _Optional[str] = ..., dispatched_at: _Optional[float] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., outcome: _Optional[str] = ..., predicted_s: _Optional[float] = ...) -> None: ...

class TaskDetail(_message.Message):
    __slots__ = ("task_id", "handler", "state", "attempts", "agent_id", "depends_on", "predicted_s", "actual_s", "cache_layer", "trace_id", "started_at", "finished_at", "error", "spans", "events", "events_dropped")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_S_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_S_FIELD_NUMBER: _ClassVar[int]
    CACHE_LAYER_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    handler: str
    state: str
    attempts: int
    agent_id: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    predicted_s: float
    actual_s: float
    cache_layer: str
    trace_id: str
    started_at: float
    finished_at: float
    error: _common_pb2.TaskError
    spans: _containers.RepeatedCompositeFieldContainer[AttemptSpan]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.TaskEvent]
    events_dropped: int
    def __init__(self, task_id: _Optional[str] = ..., handler: _Optional[str] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., agent_id: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., predicted_s: _Optional[float] = ..., actual_s: _Optional[float] = ..., cache_layer: _Optional[str] = ..., trace_id: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.TaskError, _Mapping]] = ..., spans: _Optional[_Iterable[_Union[AttemptSpan, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[_common_pb2.TaskEvent, _Mapping]]] = ..., events_dropped: _Optional[int] = ...) -> None: ...

class JobDetail(_message.Message):
    __slots__ = ("job", "tasks", "task_offset", "next_task_offset", "note")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TASK_OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_OFFSET_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    job: JobSummary
    tasks: _containers.RepeatedCompositeFieldContainer[TaskDetail]
    task_offset: int
    next_task_offset: int
    note: str
    def __init__(self, job: _Optional[_Union[JobSummary, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskDetail, _Mapping]]] = ..., task_offset: _Optional[int] = ..., next_task_offset: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Stats(_message.Message):
    __slots__ = ("controller_id", "epoch", "uptime_s", "tasks_by_state", "submitted", "succeeded", "failed", "cancelled", "timed_out", "retries", "queued", "agents", "jobs_active", "completed_per_s", "rate_keys", "handlers", "circuits", "quarantined", "schedule_timeouts", "heartbeat_timeouts", "split_tasks", "stolen", "cache", "assignment_messages", "assignments_sent", "tuning")
    class TasksByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    TASKS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    JOBS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_PER_S_FIELD_NUMBER: _ClassVar[int]
    RATE_KEYS_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    CIRCUITS_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_TASKS_FIELD_NUMBER: _ClassVar[int]
    STOLEN_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_SENT_FIELD_NUMBER: _ClassVar[int]
    TUNING_FIELD_NUMBER: _ClassVar[int]
    controller_id: str
    epoch: int
    uptime_s: float
    tasks_by_state: _containers.ScalarMap[str, int]
    submitted: int
    succeeded: int
    failed: int
    cancelled: int
    timed_out: int
    retries: int
    queued: int
    agents: int
    jobs_active: int
    completed_per_s: float
    rate_keys: _containers.RepeatedCompositeFieldContainer[RateKeyStats]
    handlers: _containers.RepeatedCompositeFieldContainer[HandlerStats]
    circuits: _containers.RepeatedCompositeFieldContainer[CircuitStats]
    quarantined: _containers.RepeatedCompositeFieldContainer[Quarantine]
    schedule_timeouts: int
    heartbeat_timeouts: int
    split_tasks: int
    stolen: int
    cache: CacheStats
    assignment_messages: int
    assignments_sent: int
    tuning: Tuning
    def __init__(self, controller_id: _Optional[str] = ..., epoch: _Optional[int] = ..., uptime_s: _Optional[float] = ..., tasks_by_state: _Optional[_Mapping[str, int]] = ..., submitted: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., timed_out: _Optional[int] = ..., retries: _Optional[int] = ..., queued: _Optional[int] = ..., agents: _Optional[int] = ..., jobs_active: _Optional[int] = ..., completed_per_s: _Optional[float] = ..., rate_keys: _Optional[_Iterable[_Union[RateKeyStats, _Mapping]]] = ..., handlers: _Optional[_Iterable[_Union[HandlerStats, _Mapping]]] = ..., circuits: _Optional[_Iterable[_Union[CircuitStats, _Mapping]]] = ..., quarantined: _Optional[_Iterable[_Union[Quarantine, _Mapping]]] = ..., schedule_timeouts: _Optional[int] = ..., heartbeat_timeouts: _Optional[int] = ..., split_tasks: _Optional[int] = ..., stolen: _Optional[int] = ..., cache: _Optional[_Union[CacheStats, _Mapping]] = ..., assignment_messages: _Optional[int] = ..., assignments_sent: _Optional[int] = ..., tuning: _Optional[_Union[Tuning, _Mapping]] = ...) -> None: ...

class Tuning(_message.Message):
    __slots__ = ("mode", "objective", "interval_s", "converged", "knobs", "history")
    MODE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    KNOBS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    mode: str
    objective: str
    interval_s: float
    converged: bool
    knobs: _containers.RepeatedCompositeFieldContainer[TuningKnob]
    history: _containers.RepeatedCompositeFieldContainer[TuningChange]
    def __init__(self, mode: _Optional[str] = ..., objective: _Optional[str] = ..., interval_s: _Optional[float] = ..., converged: _Optional[bool] = ..., knobs: _Optional[_Iterable[_Union[TuningKnob, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[TuningChange, _Mapping]]] = ...) -> None: ...

class TuningKnob(_message.Message):
    __slots__ = ("name", "value", "floor", "ceiling")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: int
    floor: int
    ceiling: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[int] = ..., floor: _Optional[int] = ..., ceiling: _Optional[int] = ...) -> None: ...

class TuningChange(_message.Message):
    __slots__ = ("seq", "at", "knob", "old_value", "new_value", "reason", "objective", "before", "before_detail", "judged", "after", "after_detail", "outcome", "verdict", "judged_at")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KNOB_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    AFTER_DETAIL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    JUDGED_AT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: float
    knob: str
    old_value: int
    new_value: int
    reason: str
    objective: str
    before: float
    before_detail: str
    judged: bool
    after: float
    after_detail: str
    outcome: str
    verdict: str
    judged_at: float
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[float] = ..., knob: _Optional[str] = ..., old_value: _Optional[int] = ..., new_value: _Optional[int] = ..., reason: _Optional[str] = ..., objective: _Optional[str] = ..., before: _Optional[float] = ..., before_detail: _Optional[str] = ..., judged: _Optional[bool] = ..., after: _Optional[float] = ..., after_detail: _Optional[str] = ..., outcome: _Optional[str] = ..., verdict: _Optional[str] = ..., judged_at: _Optional[float] = ...) -> None: ...

class HandlerStats(_message.Message):
    __slots__ = ("name", "predictions", "mdape", "median_s", "io_fraction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MDAPE_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_S_FIELD_NUMBER: _ClassVar[int]
    IO_FRACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    predictions: int
    mdape: float
    median_s: float
    io_fraction: float
    def __init__(self, name: _Optional[str] = ..., predictions: _Optional[int] = ..., mdape: _Optional[float] = ..., median_s: _Optional[float] = ..., io_fraction: _Optional[float] = ...) -> None: ...

class CircuitStats(_message.Message):
    __slots__ = ("key", "state", "trips", "open_for_s", "reason")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIPS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FOR_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    key: str
    state: str
    trips: int
    open_for_s: float
    reason: str
    def __init__(self, key: _Optional[str] = ..., state: _Optional[str] = ..., trips: _Optional[int] = ..., open_for_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class Quarantine(_message.Message):
    __slots__ = ("agent_id", "handler", "reason", "for_s")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FOR_S_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    handler: str
    reason: str
    for_s: float
    def __init__(self, agent_id: _Optional[str] = ..., handler: _Optional[str] = ..., reason: _Optional[str] = ..., for_s: _Optional[float] = ...) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("entries", "bytes", "hits", "misses", "skipped", "evictions", "hit_rate", "preloads", "preload_useful_ratio")
    class HitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class EvictionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    PRELOADS_FIELD_NUMBER: _ClassVar[int]
    PRELOAD_USEFUL_RATIO_FIELD_NUMBER: _ClassVar[int]
    entries: int
    bytes: int
    hits: _containers.ScalarMap[str, int]
    misses: int
    skipped: int
    evictions: _containers.ScalarMap[str, int]
    hit_rate: float
    preloads: int
    preload_useful_ratio: float
    def __init__(self, entries: _Optional[int] = ..., bytes: _Optional[int] = ..., hits: _Optional[_Mapping[str, int]] = ..., misses: _Optional[int] = ..., skipped: _Optional[int] = ..., evictions: _Optional[_Mapping[str, int]] = ..., hit_rate: _Optional[float] = ..., preloads: _Optional[int] = ..., preload_useful_ratio: _Optional[float] = ...) -> None: ...

class RateKeyStats(_message.Message):
    __slots__ = ("key", "paced_rps", "concurrency_limit", "in_flight", "waiting", "admitted", "waited", "rate_limited", "tokens", "paused_for_s", "limit_stated")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PACED_RPS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    WAITED_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FOR_S_FIELD_NUMBER: _ClassVar[int]
    LIMIT_STATED_FIELD_NUMBER: _ClassVar[int]
    key: str
    paced_rps: float
    concurrency_limit: int
    in_flight: int
    waiting: int
    admitted: int
    waited: int
    rate_limited: int
    tokens: float
    paused_for_s: float
    limit_stated: bool
    def __init__(self, key: _Optional[str] = ..., paced_rps: _Optional[float] = ..., concurrency_limit: _Optional[int] = ..., in_flight: _Optional[int] = ..., waiting: _Optional[int] = ..., admitted: _Optional[int] = ..., waited: _Optional[int] = ..., rate_limited: _Optional[int] = ..., tokens: _Optional[float] = ..., paused_for_s: _Optional[float] = ..., limit_stated: _Optional[bool] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("wait_for",)
    WAIT_FOR_FIELD_NUMBER: _ClassVar[int]
    wait_for: int
    def __init__(self, wait_for: _Optional[int] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "handlers", "slots", "in_flight", "running", "cpu_percent", "memory_percent", "draining", "connected_at", "last_heartbeat", "labels", "completed", "process_cpu_percent")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PROCESS_CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    handlers: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    in_flight: int
    running: int
    cpu_percent: float
    memory_percent: float
    draining: bool
    connected_at: float
    last_heartbeat: float
    labels: _containers.ScalarMap[str, str]
    completed: int
    process_cpu_percent: float
    def __init__(self, agent_id: _Optional[str] = ..., handlers: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., in_flight: _Optional[int] = ..., running: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., draining: _Optional[bool] = ..., connected_at: _Optional[float] = ..., last_heartbeat: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., completed: _Optional[int] = ..., process_cpu_percent: _Optional[float] = ...) -> None: ...

class AgentList(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class DrainAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class DrainAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
