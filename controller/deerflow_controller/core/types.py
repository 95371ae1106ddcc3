"""The scheduling core's plain data: what an agent reports (:class:`AttemptResult`), what the
core decides (:class:`Outbox`), its counters, a journaled result for restore, and a split
task's run. No behaviour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from deerflow_controller.core.model import AttemptKey, Task, TaskError, TaskSpec, TaskState
from deerflow_controller.decomposer import PartCollector, Plan

__all__ = [
    "PRELOAD_PRIORITY",
    "PROGRESS_EVENT_EVERY_S",
    "RESTORABLE",
    "AttemptResult",
    "Counters",
    "Outbox",
    "RestoredResult",
    "SplitRun",
]


@dataclass(slots=True)
class AttemptResult:
    """How an attempt ended, as an agent reports it."""

    key: AttemptKey
    ok: bool
    output: bytes = b""
    error: TaskError | None = None
    cancelled: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Provider signals the handler reported (deerflow_common.signals)."""
    run_s: float = 0.0
    """How long the handler ran, by the agent's clock (0 = unknown)."""
    cpu_s: float = 0.0
    rss_bytes: int = 0
    output_sha256: str = ""
    """Hex SHA-256 of ``output``, when the shell hashed it off its event loop (an output large
    enough that its readers will fetch it by reference); empty otherwise."""


@dataclass(slots=True)
class Outbox:
    """Decisions the shell carries out after each call, then clears with :meth:`take`."""

    assignments: dict[str, list[Task]] = field(default_factory=dict)
    cancels: dict[str, list[AttemptKey]] = field(default_factory=dict)
    touched_jobs: set[str] = field(default_factory=set)
    expired_jobs: list[str] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    """Agents declared dead for silence: the shell closes their streams."""
    notices: list[str] = field(default_factory=list)
    """Cluster-level decisions in a sentence (circuit opened, agent quarantined): the shell
    logs them; the tasks they affect carry them in their events' detail."""

    def __bool__(self) -> bool:
        return bool(
            self.assignments
            or self.cancels
            or self.touched_jobs
            or self.expired_jobs
            or self.disconnects
            or self.notices
        )


@dataclass(slots=True)
class Counters:
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    retries: int = 0
    schedule_timeouts: int = 0
    heartbeat_timeouts: int = 0
    circuit_trips: int = 0
    quarantines: int = 0
    stolen: int = 0
    split_tasks: int = 0
    stale_results: int = 0
    foreign_results: int = 0
    """Results refused because their agent was never given that attempt (``Task.holders``)."""


@dataclass(slots=True)
class RestoredResult:
    """A task's final result as the journal kept it (restore, issue #3)."""

    state: TaskState
    output: bytes = b""
    error: TaskError | None = None
    attempt: int = 0
    agent_id: str = ""


@dataclass(frozen=True, slots=True)
class RestoredJob:
    """A job as the journal kept it: what was submitted, and the final results of the tasks
    that had finished (by task id). ``submitted_at`` is when the first leader accepted it (0:
    unknown, then the restore's own time), from which its ``deadline_s`` counts."""

    job_id: str
    name: str
    specs: Sequence[TaskSpec]
    finished: Mapping[str, RestoredResult] = field(default_factory=dict)
    submitted_at: float = 0.0
    deadline_s: float = 0.0


RESTORABLE = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)


PRELOAD_PRIORITY = -(2**31)
"""Speculative tasks come after everything a client submitted."""

PROGRESS_EVENT_EVERY_S = 1.0
"""Most PROGRESS events one task emits a second: the agent already sends at most two reports a
second per attempt; a long task (a sub-agent's run) must not fill its job's event log."""


@dataclass(slots=True)
class SplitRun:
    """A split task's parts (in plan order) and the collector that decides the parent."""

    plan: Plan
    parts: list[Task]
    collector: PartCollector
