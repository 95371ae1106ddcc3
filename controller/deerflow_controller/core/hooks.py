"""What the scheduling core asks of each policy object: one Protocol per policy area, and the
no-op functions the core uses where no policy is installed (so it runs with any subset). The
core binds a policy's methods once, in its ``use_*`` methods; see ``core.SchedulerCore``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from deerflow_controller.cache import ResultCache
from deerflow_controller.core.model import AgentView, ErrorClass, Task, TaskError, TaskState
from deerflow_controller.core.types import AttemptResult, SplitRun
from deerflow_controller.recovery import CircuitBreakers

__all__ = ["CacheHooks", "PlacementHooks", "RecoveryHooks", "SplitHooks"]


class SplitHooks(Protocol):
    """What the core asks of a decomposition policy (``core_split.Decomposition``)."""

    def split(self, task: Task, now: float) -> bool:
        """Split a ready task into parts: True when it was split (or failed to split)."""
        ...

    def part_ended(self, part: Task, now: float) -> None:
        """A part of a split task reached a terminal state."""
        ...

    def cancel_parts(self, run: SplitRun, indices: Iterable[int], now: float) -> None:
        """Stop the given parts of a split task."""
        ...


class RecoveryHooks(Protocol):
    """What the core asks of a recovery policy (``core_recovery.Recovery``)."""

    breakers: CircuitBreakers
    quarantined: dict[str, frozenset[str]]

    def circuit_keys(self, task: Task) -> tuple[str, ...]:
        """The circuits an attempt of ``task`` draws on."""
        ...

    def record_success(self, task: Task, agent_id: str, now: float) -> None:
        """An attempt succeeded."""
        ...

    def record_failure(
        self, task: Task, agent_id: str, error: TaskError, cls: ErrorClass, now: float
    ) -> None:
        """An attempt failed."""
        ...

    def park(self, task: Task, key: str, now: float) -> None:
        """Hold a task whose circuit ``key`` is open."""
        ...

    def advance(self, now: float) -> None:
        """A recovery timer fired."""
        ...


class CacheHooks(Protocol):
    """What the core asks of a result-cache policy (``core_cache.Caching``)."""

    cache: ResultCache

    def from_cache(self, task: Task, now: float) -> bool:
        """Answer a ready task from the cache (True when it was answered or attached)."""
        ...

    def settle(self, task: Task, state: TaskState, now: float) -> None:
        """A task that led or followed a cache flight ended."""
        ...

    def preload(self, now: float) -> None:
        """Nothing is ready: spend idle capacity on speculative tasks."""
        ...


def no_cache(task: Task, now: float) -> bool:
    return False


def no_settle(task: Task, state: TaskState, now: float) -> None:
    pass


def no_preload(now: float) -> None:
    pass


class PlacementHooks(Protocol):
    """What the core asks of a placement policy (``core_placement.Placement``)."""

    def place(self, task: Task, agents: Sequence[AgentView], now: float) -> AgentView | None:
        """The agent to run ``task`` among ``agents`` (the puller first); None: keep it
        queued."""
        ...

    def steal(self, now: float) -> None:
        """Move attempts waiting unstarted on lagging agents to idle ones."""
        ...

    def learn(self, task: Task, agent_id: str, result: AttemptResult, now: float) -> None:
        """Learn from a successful attempt's measured cost."""
        ...


def first_agent(task: Task, agents: Sequence[AgentView], now: float) -> AgentView | None:
    return agents[0] if agents else None


def no_steal(now: float) -> None:
    pass


def no_learn(task: Task, agent_id: str, result: AttemptResult, now: float) -> None:
    pass


def no_circuit_keys(task: Task) -> tuple[str, ...]:
    return ()


def no_record_success(task: Task, agent_id: str, now: float) -> None:
    pass


def no_record_failure(
    task: Task, agent_id: str, error: TaskError, cls: ErrorClass, now: float
) -> None:
    pass


def no_park(task: Task, key: str, now: float) -> None:
    pass


def no_advance(now: float) -> None:
    pass


def no_split(task: Task, now: float) -> bool:
    return False


def no_part_ended(part: Task, now: float) -> None:
    pass


def no_cancel_parts(run: SplitRun, indices: Iterable[int], now: float) -> None:
    pass
