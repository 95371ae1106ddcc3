"""What the scheduling core asks of each policy object: one Protocol per policy area, and the
stand-ins the core installs where no policy is given (so it runs with any subset):
:class:`WholeTasks` (no decomposition), :class:`FirstFit` (no placement, no predictor),
:class:`FixedRetries` (no recovery) and the ``no_*`` cache functions. The core binds a policy's
methods once, in its ``use_*`` methods; see ``core_state.SchedulerCore``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from deerflow_controller.cache import ResultCache
from deerflow_controller.core.model import (
    AgentView,
    AttemptKey,
    ErrorClass,
    HandlerTraits,
    Task,
    TaskError,
    TaskState,
)
from deerflow_controller.core.types import AttemptResult, SplitRun
from deerflow_controller.recovery import Budget, CircuitBreakers, RetryDecision

__all__ = [
    "CacheHooks",
    "FirstFit",
    "FixedRetries",
    "PlacementHooks",
    "RecoveryHooks",
    "SplitHooks",
    "WholeTasks",
]


class SplitHooks(Protocol):
    """What the core asks of a decomposition policy (``core_split.Decomposition``)."""

    def split(self, task: Task, now: float) -> bool:
        """Split a ready task into parts: True when it was split (or failed to split)."""
        ...

    def splits(self, handler: str) -> bool:
        """Whether :meth:`split` may split a task of ``handler`` (False: it never would)."""
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

    def record_successes(self, tasks: Sequence[Task], agent_id: str, now: float) -> None:
        """Attempts of ``tasks`` succeeded on ``agent_id`` (one result message, in order)."""
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

    def decide_retry(
        self, task: Task, error: TaskError, cls: ErrorClass, metadata: Mapping[str, str]
    ) -> RetryDecision:
        """Whether and when ``task`` runs again after a failed attempt (``task.failures``
        counts it already; ``error`` is retryable)."""
        ...


class CacheHooks(Protocol):
    """What the core asks of a result-cache policy (``core_cache.Caching``)."""

    cache: ResultCache

    def from_cache(self, task: Task, now: float) -> bool:
        """Answer a ready task from the cache (True when it was answered or attached)."""
        ...

    def unlooked(self, handler: str, n: int) -> bool:
        """Whether from_cache answers False for every task of ``handler`` with the default
        cache policy without a look; if so, count ``n`` of them as it would have."""
        ...

    def settle(self, task: Task, state: TaskState, now: float) -> None:
        """A task that led or followed a cache flight ended."""
        ...

    def preload(self, now: float) -> None:
        """Nothing is ready: spend idle capacity on speculative tasks."""
        ...


def no_cache(task: Task, now: float) -> bool:
    return False


def no_lookups(handler: str, n: int) -> bool:
    return True


def no_settle(task: Task, state: TaskState, now: float) -> None:
    pass


def no_preload(now: float) -> None:
    pass


class PlacementHooks(Protocol):
    """What the core asks of a placement policy (``core_placement.Placement``): where a task
    runs, and the predictions and per-agent ledgers that decide it. The two ledger callables
    are called once per attempt, so a policy may hand over its ledger's own bound methods."""

    @property
    def lpt_max_advance_s(self) -> float:
        """Most seconds a long predicted duration moves a task ahead in the ready queue."""
        ...

    @property
    def attempt_started(self) -> Callable[[str, AttemptKey, float], None]:
        """An agent started an attempt (agent id, attempt key, now)."""
        ...

    @property
    def attempt_ended(self) -> Callable[[str, AttemptKey, float], None]:
        """An attempt left an agent, however it ended (agent id, attempt key, now)."""
        ...

    def predict(self, task: Task) -> float:
        """Predict a task's duration before it is first queued: set ``task.features`` and
        ``task.predicted_s``, and return it (seconds)."""
        ...

    def assigned(self, task: Task, agent: AgentView) -> None:
        """A predicted task was assigned to ``agent``: set ``task.predicted_run_s`` there and
        count it in the agent's predicted backlog."""
        ...

    def declare(self, traits: Mapping[str, HandlerTraits]) -> None:
        """An agent declared handlers' defaults (duration, CPU, memory, items field)."""
        ...

    def agent_left(self, agent_id: str) -> None:
        """An agent is gone: forget its ledger."""
        ...

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


class FirstFit:
    """No placement policy: nothing is predicted (the ready queue stays FIFO within a
    priority, ``task.predicted_s`` stays unset so nothing is placed), the puller runs what it
    pulls, no backlog is kept and nothing is stolen."""

    __slots__ = ()
    lpt_max_advance_s = 0.0

    def place(self, task: Task, agents: Sequence[AgentView], now: float) -> AgentView | None:
        return agents[0] if agents else None

    def steal(self, now: float) -> None:
        pass

    def learn(self, task: Task, agent_id: str, result: AttemptResult, now: float) -> None:
        pass

    def predict(self, task: Task) -> float:
        return 0.0

    def assigned(self, task: Task, agent: AgentView) -> None:
        pass

    def declare(self, traits: Mapping[str, HandlerTraits]) -> None:
        pass

    def agent_left(self, agent_id: str) -> None:
        pass

    def attempt_started(self, agent_id: str, key: AttemptKey, now: float) -> None:
        pass

    def attempt_ended(self, agent_id: str, key: AttemptKey, now: float) -> None:
        pass


class FixedRetries:
    """No recovery policy: circuits nothing records into (so always closed), no quarantine,
    and a retryable failure runs again at once while the task's ``max_retries`` lasts,
    whatever its class (no budgets per class, no jitter)."""

    __slots__ = ("breakers", "quarantined")

    def __init__(self) -> None:
        self.breakers = CircuitBreakers()
        self.quarantined: dict[str, frozenset[str]] = {}

    def circuit_keys(self, task: Task) -> tuple[str, ...]:
        return ()

    def record_successes(self, tasks: Sequence[Task], agent_id: str, now: float) -> None:
        pass

    def record_failure(
        self, task: Task, agent_id: str, error: TaskError, cls: ErrorClass, now: float
    ) -> None:
        pass

    def park(self, task: Task, key: str, now: float) -> None:
        pass

    def advance(self, now: float) -> None:
        pass

    def decide_retry(
        self, task: Task, error: TaskError, cls: ErrorClass, metadata: Mapping[str, str]
    ) -> RetryDecision:
        limit = max(0, task.max_retries)
        used = task.failures - 1  # the failure being decided is counted already
        if used >= limit:
            reason = f"gave up: retry budget of {limit} used"
            return RetryDecision(False, 0.0, cls, Budget.TRANSIENT, used, limit, reason)
        reason = f"retry {used + 1} of {limit} at once"
        return RetryDecision(True, 0.0, cls, Budget.TRANSIENT, used + 1, limit, reason)


class WholeTasks:
    """No decomposition policy: every task runs whole."""

    __slots__ = ()

    def split(self, task: Task, now: float) -> bool:
        return False

    def splits(self, handler: str) -> bool:
        return False

    def part_ended(self, part: Task, now: float) -> None:
        pass

    def cancel_parts(self, run: SplitRun, indices: Iterable[int], now: float) -> None:
        pass
