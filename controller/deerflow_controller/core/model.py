"""Data the scheduling core works on: task specs, tasks, jobs, agents and events.

Plain slotted dataclasses with no gRPC or protobuf in them, so the core can be driven from unit
tests with a fake clock. The numeric values of :class:`TaskState` and :class:`ErrorKind` equal
the wire enums in ``deerflow_protos/common.proto``, so the shell converts with an int cast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from deerflow_common.errors import AttemptKey, ErrorClass, ErrorKind, TaskError

if TYPE_CHECKING:
    from deerflow_controller.cache import RequestKey
    from deerflow_controller.recovery import RetryState

__all__ = [
    "HOLDERS_KEPT",
    "TERMINAL_STATES",
    "AgentView",
    "AttemptKey",
    "CachePolicy",
    "ErrorClass",
    "ErrorKind",
    "Event",
    "HandlerTraits",
    "Job",
    "SplitPolicy",
    "Task",
    "TaskError",
    "TaskSpec",
    "TaskState",
]


class CachePolicy(IntEnum):
    """Equals ``deerflow.v1.CachePolicy``."""

    DEFAULT = 0
    OFF = 1
    ON = 2
    REFRESH = 3


class SplitPolicy(IntEnum):
    """Equals ``deerflow.v1.SplitPolicy``."""

    AUTO = 0
    NEVER = 1


class TaskState(IntEnum):
    PENDING = 1
    QUEUED = 2
    THROTTLED = 3
    DISPATCHED = 4
    RUNNING = 5
    SUCCEEDED = 6
    FAILED = 7
    CANCELLED = 8
    TIMED_OUT = 9
    RETRYING = 10  # event only; the task itself goes back to QUEUED
    PROGRESS = 11  # event only: the running attempt reported progress; the task stays RUNNING


TERMINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)


@dataclass(slots=True)
class TaskSpec:
    """A task as submitted, after validation. Durations in seconds; 0 means 'use the default'.

    Treat as immutable. Not declared frozen only because a frozen dataclass's __init__ costs
    about 3 us more per task, which is a tenth of the controller's whole per-task budget."""

    id: str
    handler: str
    payload: bytes = b""
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    timeout_s: float = 0.0
    max_retries: int = -1
    labels: dict[str, str] = field(default_factory=dict)
    schedule_to_start_s: float = 0.0
    heartbeat_timeout_s: float = 0.0
    trace_context: dict[str, str] = field(default_factory=dict)
    rate_keys: tuple[str, ...] = ()
    """Budgets the task draws on; it waits THROTTLED until all have room."""
    est_tokens: float = 0.0
    tenant: str = ""
    cache: CachePolicy = CachePolicy.DEFAULT
    split: SplitPolicy = SplitPolicy.AUTO
    partial_results: bool = False
    """For a task the controller splits: succeed with the parts that succeeded (reporting each
    failed item) instead of failing at the first failed part."""
    est_duration_s: float = 0.0
    """The submitter's estimate of one attempt; 0 lets the predictor estimate it."""
    schedule_to_close_s: float = 0.0
    """The longest the task may take over all its attempts, from first ready to its end
    (0: no limit); then it ends TIMED_OUT."""
    inputs: tuple[str, ...] = ()
    """Dependencies whose outputs the handler reads (each in ``depends_on``); see
    ``core.inputs``."""
    inputs_all: bool = False
    """The handler reads every dependency's output (``inputs`` is then empty)."""


HOLDERS_KEPT = 8
"""Attempts of one task whose holders are remembered (``Task.holders``): a result of an attempt
older than that is discarded as stale. Retries are few (3 by default); an attempt taken back
unstarted (stolen, drained) adds one too, so 8 leaves room for both."""


@dataclass(slots=True, eq=False)
class Task:
    job: Job
    spec: TaskSpec
    timeout_s: float
    max_retries: int
    state: TaskState = TaskState.PENDING
    attempt: int = 0
    """Number of dispatches so far; the current attempt's number once dispatched."""
    failures: int = 0
    """Attempts that ended badly and count against max_retries."""
    waiting_on: int = 0
    dependents: Sequence[Task] = ()
    """Tasks that wait for this one (a list once there is one: :meth:`add_dependent`). Most
    tasks have none; an empty list each would be one more object for the collector to visit."""
    agent_id: str = ""
    output: bytes = b""
    error: TaskError | None = None
    ready_seq: int = 0
    """The ready queue's token for the task's live entry there (0: not queued); only
    ``ReadyQueue`` sets it."""
    gate_seq: int = 0
    """The rate limiter's token for the task's live entry in its first key's gate while it
    waits THROTTLED there (0: not waiting); only ``RateLimiter`` sets it."""
    ready_at: float = 0.0
    queue_place: int = 0
    """The ready queue's sequence number at the task's first push (0: never queued): a task
    queued again (a retry, an attempt given back) keeps its place."""
    queue_order: float = 0.0
    """Its rank within its tenant and priority at that first push (see ``ReadyQueue``)."""
    throttle_place: int = 0
    """The rate limiter's sequence number at the task's first wait (0: never throttled): a
    retried task waits in its old place on its keys."""
    throttled_on: str = ""
    """The rate key in whose line this THROTTLED task waits (the first key that lacked room)."""
    deadline: float = 0.0
    """When the controller gives up on the current attempt (start-to-close + grace)."""
    rate_hold: list[tuple[str, float]] | None = None
    """(rate key, tokens charged) while the task holds its keys' slots."""
    progress_at: float = 0.0
    """When the running attempt last showed life (start or progress report): heartbeat timeout."""
    progress_event_at: float = -math.inf
    """When the task's last PROGRESS event was emitted (they are at most one a second)."""
    close_at: float = 0.0
    """When schedule-to-close ends the task (0: not armed; armed when it is first ready)."""
    scheduled_attempt: int = -1
    """The attempt number the armed schedule-to-start timer guards (-1: none armed)."""
    retry: RetryState | None = None
    """What the retry policy remembers between attempts (created at the first failure)."""
    parked_on: str = ""
    """The circuit (rate key or handler:<name>) this THROTTLED task waits on to close."""
    predicted_s: float = -1.0
    """Predicted run time on the reference agent (-1: not predicted yet)."""
    predicted_run_s: float = 0.0
    """Predicted run time of the current attempt on its agent (for the accuracy stats)."""
    features: object = None
    """The predictor's features of the payload (computed once)."""
    parent: Task | None = None
    """For a part of a split task: the task it is part of (parts emit no client events)."""
    part_index: int = -1
    split: object = None
    """For a split task: its parts and their collector (scheduler's ``_SplitRun``); None when
    the task runs whole. ``False`` once the decomposer decided not to split it."""
    cache_key: RequestKey | None = None
    """The result cache's request key after a miss (``cache.RequestKey``): the task leads."""
    cache_leader: tuple[str, str] | None = None
    """(job id, task id) of the identical running task this one waits for (in-flight dedup)."""
    run_s: float = 0.0
    """How long the successful attempt ran (agent's clock): the cache's recompute cost."""
    circuit_keys: tuple[str, ...] | None = None
    """The circuits its attempts draw on (its rate keys and handler), computed once."""
    speculative: bool = False
    """Submitted by the cache's preloader: its result only lands in the cache."""
    consumers: int = 0
    """Dependents that asked for this task's output (``TaskSpec.inputs``) and have not ended:
    while above 0 after it succeeded, its output is kept for them (``core.inputs``)."""
    retained: bool = False
    """Its output counts against the job's ``retained_bytes`` (kept for dependents)."""
    output_sha256: str = ""
    """Hex SHA-256 of ``output`` once an assignment sent it by reference (``service.inputs``
    computes it on first use; an output never changes once its task succeeded)."""
    holders: str | tuple[int | str, ...] = ""
    """Who was given each of the task's last ``HOLDERS_KEPT`` attempts, so that a result,
    start or progress report counts only from the agent that holds or held that attempt (a
    late result of an earlier attempt still wins its race), never from another agent naming
    its key: "" before the first dispatch; the agent id alone while attempt 1 is the only one
    (most tasks: no tuple, 0 bytes more per task); else flat (attempt, agent id, ...) pairs,
    oldest first. Read and written only through :meth:`give` and :meth:`held_by`."""

    def add_dependent(self, task: Task) -> None:
        """``task`` waits for this one."""
        dependents = self.dependents
        if isinstance(dependents, list):
            dependents.append(task)
        else:
            self.dependents = [task]

    def give(self, agent_id: str) -> None:
        """Record that ``agent_id`` holds the current attempt (a dispatch, or a reclaim after
        a reconnect or a failover)."""
        attempt, holders = self.attempt, self.holders
        if attempt == 1 and isinstance(holders, str):
            self.holders = agent_id
            return
        pairs: tuple[int | str, ...] = (1, holders) if isinstance(holders, str) else holders
        if not holders:
            pairs = ()
        if pairs and pairs[-2] == attempt:
            pairs = pairs[:-2]
        elif len(pairs) >= 2 * HOLDERS_KEPT:
            pairs = pairs[2 - 2 * HOLDERS_KEPT :]
        self.holders = (*pairs, attempt, agent_id)

    def held_by(self, attempt: int) -> str:
        """The agent given attempt ``attempt`` ("" when none was, or it is older than the
        last ``HOLDERS_KEPT``)."""
        holders = self.holders
        if isinstance(holders, str):
            return holders if attempt == 1 else ""
        for i in range(len(holders) - 2, -1, -2):
            if holders[i] == attempt:
                return str(holders[i + 1])
        return ""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def key(self) -> AttemptKey:
        return (self.job.id, self.spec.id, self.attempt)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(slots=True)
class Event:
    """One state change of one task; seq is its position in the job's event log (from 1)."""

    job_id: str
    task_id: str
    state: TaskState
    seq: int
    attempt: int
    agent_id: str
    time: float
    output: bytes = b""
    error: TaskError | None = None
    not_before: float = 0.0
    detail: str = ""
    """Why the controller decided this transition, in a sentence (cache hit, circuit open...)."""
    cache_layer: str = ""
    predicted_s: float = 0.0
    """On DISPATCHED: the attempt's predicted run time on its agent (0 = not predicted)."""
    progress: float = -1.0
    """On PROGRESS: how far the attempt got, 0-1 (-1: the handler did not say)."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(slots=True, eq=False)
class Job:
    id: str
    name: str
    submitted_at: float
    tasks: dict[str, Task] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    remaining: int = 0
    finished_at: float = 0.0
    terminal_events: int = 0
    parts: dict[str, Task] = field(default_factory=dict)
    """Parts of split tasks, by part id: dispatched like tasks, invisible to clients."""
    deadline_s: float = 0.0
    """Its deadline after acceptance (0: none): then its unfinished tasks end TIMED_OUT."""
    retained_bytes: int = 0
    """Bytes of its tasks' outputs kept for dependents that asked for them (``core.inputs``)."""
    output_bytes: int = 0
    """Bytes of its tasks' SUCCEEDED outputs (``core.outputs``)."""

    @property
    def done(self) -> bool:
        return self.remaining == 0


@dataclass(frozen=True, slots=True)
class HandlerTraits:
    """What an agent declares about a handler (agent.proto HandlerInfo); policies read it."""

    kind: str = "io"
    """'io' or 'cpu'."""
    cacheable: bool = False
    """Results may be cached (exact match on the request). Off unless declared: a handler with
    side effects must never be answered from the cache."""
    nondeterministic: bool = False
    """The same input may give another answer: cached only for tasks asking ``CachePolicy.ON``."""
    similarity_field: str = ""
    """JSON field (dotted path) whose text the similarity layer compares; empty = exact only."""
    similarity_threshold: float = 0.0
    """Cosine a neighbour must reach; 0 = exact cache only."""
    cache_ttl_s: float = 0.0
    """Fixed freshness for this handler's results; 0 = the controller's freshness rules."""
    items_field: str = ""
    default_duration_s: float = 0.0
    default_cpu_s: float = 0.0
    default_memory_bytes: int = 0


@dataclass(slots=True, eq=False)
class AgentView:
    """What the core knows of one connected agent."""

    id: str
    handlers: frozenset[str]
    slots: int
    prefetch: int
    labels: dict[str, str] = field(default_factory=dict)
    connected_at: float = 0.0
    in_flight: dict[AttemptKey, Task] = field(default_factory=dict)
    handler_caps: dict[str, int] = field(default_factory=dict)
    """Handlers the agent runs fewer of at once than its slots (``--handler-slots``)."""
    capped_in_flight: dict[str, int] = field(default_factory=dict)
    """Unfinished attempts of each capped handler."""
    draining: bool = False
    running: int = 0
    cpu_percent: float = 0.0
    """CPU in use on the agent's machine, 0-100, by any process (last heartbeat): the headroom
    placement reads, since other work on the machine slows a cpu task as much as the agent's own."""
    memory_percent: float = 0.0
    """Memory in use on the agent's machine, 0-100 (last heartbeat)."""
    process_cpu_percent: float = 0.0
    """CPU the agent's own processes use, 0-100 of its machine (last heartbeat): what its work
    costs, shown beside ``cpu_percent``; an idle agent on a busy machine reads near 0."""
    last_heartbeat: float = 0.0
    completed: int = 0
    completion_rate: float = 0.0
    """Attempts finished per second (a moving average over windows of results), which sizes the
    prefetch (``SchedulerConfig.prefetch_cover_s``)."""
    rate_window_start: float = 0.0
    rate_window_count: int = 0
    seq: int = 0
    """Its place in the order agents joined (the core's counter): the order dispatch offers
    agents in (``core.credit_index``)."""
    open_now: frozenset[str] | None = None
    """What :meth:`open_handlers` returns until an attempt of a capped handler starts or ends
    here (None: to be worked out again); dispatch asks for every task it sends."""

    def hold(self, key: AttemptKey, task: Task) -> None:
        """Count an attempt as unfinished on this agent."""
        self.in_flight[key] = task
        handler = task.spec.handler
        if handler in self.handler_caps:
            self.capped_in_flight[handler] = self.capped_in_flight.get(handler, 0) + 1
            self.open_now = None

    def release(self, key: AttemptKey) -> Task | None:
        """The attempt ended or left this agent; returns its task if it was held here."""
        task = self.in_flight.pop(key, None)
        if task is not None and task.spec.handler in self.handler_caps:
            self.capped_in_flight[task.spec.handler] -= 1
            self.open_now = None
        return task

    def release_all(self) -> None:
        """Every attempt left this agent (it disconnected)."""
        self.in_flight.clear()
        self.capped_in_flight.clear()
        self.open_now = None

    def open_handlers(self) -> frozenset[str]:
        """Handlers this agent may take another attempt of now."""
        if not self.handler_caps:
            return self.handlers
        open_now = self.open_now
        if open_now is None:
            caps, running = self.handler_caps, self.capped_in_flight
            open_now = self.open_now = frozenset(
                h for h in self.handlers if h not in caps or running.get(h, 0) < caps[h]
            )
        return open_now

    @property
    def credit(self) -> int:
        """Attempts the controller may still send: slots + prefetch - unfinished."""
        if self.draining:
            return 0
        return max(0, self.slots + self.prefetch - len(self.in_flight))
