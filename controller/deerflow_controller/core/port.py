"""What a policy object may do to the scheduling core: a small, typed set of core operations,
bound once when the core is built (so calling one costs what calling the core's method costs,
with no allocation per task). Policies (restore first; see ``core_restore``) hold a
:class:`CorePort` instead of being mixed into the core and calling its private methods."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.credit_index import CreditIndex
from deerflow_controller.core.model import (
    AgentView,
    AttemptKey,
    HandlerTraits,
    Job,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.timers import TimerKind
from deerflow_controller.core.types import Counters, Outbox
from deerflow_controller.ratelimit import RateLimiter

__all__ = ["Assign", "CorePort", "Emit", "Finish", "MakeReady", "Terminal"]


class Emit(Protocol):
    """Append an event to a task's job (parts emit nothing) and mark the job touched."""

    def __call__(
        self,
        task: Task,
        state: TaskState,
        now: float,
        *,
        output: bytes = b"",
        error: TaskError | None = None,
        not_before: float = 0.0,
        attempt: int | None = None,
        agent: str | None = None,
        detail: str = "",
        cache_layer: str = "",
        predicted_s: float = 0.0,
        progress: float = -1.0,
    ) -> None: ...


class Terminal(Protocol):
    """End a task in ``state``: bookkeeping, its one terminal event, the job's count."""

    def __call__(
        self,
        task: Task,
        state: TaskState,
        now: float,
        error: TaskError | None,
        attempt: int | None,
        agent: str | None,
        detail: str = "",
        cache_layer: str = "",
    ) -> None: ...


class Finish(Protocol):
    """Move a task to a terminal state and settle its dependents."""

    def __call__(
        self,
        task: Task,
        state: TaskState,
        now: float,
        *,
        error: TaskError | None = None,
        attempt: int | None = None,
        agent: str | None = None,
        detail: str = "",
        cache_layer: str = "",
    ) -> None: ...


class Assign(Protocol):
    """Start a new attempt of a task on an agent (which must have credit)."""

    def __call__(self, task: Task, agent: AgentView, now: float, detail: str = "") -> None: ...


class MakeReady(Protocol):
    """Release a task that waits for nothing any more (idempotent)."""

    def __call__(self, task: Task, now: float, detail: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class CorePort:
    """The core's state and operations a policy uses. Times are seconds on the core's clock."""

    config: SchedulerConfig
    jobs: dict[str, Job]
    """Live jobs by id (the core's own dict)."""
    add_job: Callable[[str, str, Sequence[TaskSpec], float], Job]
    """Build, link, register and count a job's tasks (job id, name, specs, submitted at)."""
    make_ready: MakeReady
    emit: Emit
    terminal: Terminal
    fail_dependents: Callable[[Task, float], None]
    """Fail every live transitive dependent of a task that did not succeed."""
    arm_job_deadline: Callable[[Job, float, float], None]
    """Arm a job's deadline (job, from when, seconds after it; 0: none)."""
    dispatch: Callable[[float], None]
    """Hand ready tasks to agents with credit."""
    agents: dict[str, AgentView]
    """Connected agents by id (the core's own dict)."""
    credit_index: CreditIndex
    """The agents with credit, in join order, and their total (read only)."""
    traits: dict[str, HandlerTraits]
    """What agents declared about each handler."""
    counters: Counters
    finish: Finish
    release_slot_by_cancel: Callable[[Task], None]
    """Ask the agent running a task's attempt to stop it (its slot stays counted)."""
    outbox: Callable[[], Outbox]
    """The outbox decisions go to now (the shell takes it and a new one starts)."""
    limiter: RateLimiter
    push_timer: Callable[[float, TimerKind, object, int], None]
    """Arm a timer (when, kind, subject, token); the core's tick hands it back."""
    task_for: Callable[[AttemptKey], Task | None]
    """The task (or part) an attempt key names, if its job is still known."""
    assign: Assign
    take_back: Callable[[AgentView, AttemptKey, float], None]
    """Cancel an attempt an agent holds unstarted and free its slot there at once (agent,
    attempt key, now); the caller requeues or reassigns the task."""
    submit: Callable[[str, str, Sequence[TaskSpec], float], Job]
    """Accept a job and release its ready tasks (job id, name, specs, now)."""
