"""The pure scheduling core: fed events and the current time, it answers with decisions.

Nothing here does I/O, sleeps or reads a clock. The shell (``server.py``) calls one method per
event (a job submitted, an agent joined, a batch of results, a tick) passing ``now`` in seconds,
then takes the decisions from :attr:`Scheduler.outbox`: assignments and cancels per agent, and
the jobs that have new events. Unit tests drive it with a fake clock and assert exact decisions.

:class:`Scheduler` is the state machine (``core.py``) plus one mixin per policy area, each
calling its pure policy module: ``core_cache`` (result cache, in-flight dedup, preloading),
``core_placement`` (balancer, predictor, stealing),
``core_recovery`` (circuit breakers, quarantine). Decomposition (``core_split``) and restore
(failover, issue #3, ``core_restore``) are policy objects that own their state and talk to the
core through its ``CorePort``; the scheduler builds them, hands the decomposition to the core
(``use_split``) and forwards restore's public methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .cache import ResultCache
from .config import SchedulerConfig
from .core import (
    PRELOAD_PRIORITY,
    AttemptResult,
    Counters,
    Outbox,
    RestoredResult,
    SchedulerCore,
)
from .core_cache import CacheMixin
from .core_placement import PlacementMixin
from .core_recovery import RecoveryMixin
from .core_restore import Restorer
from .core_split import Decomposition, SplitFunctions, no_split_functions
from .model import AttemptKey, Job, TaskSpec
from .ratelimit import RateLimiter

__all__ = [
    "PRELOAD_PRIORITY",
    "AttemptResult",
    "Counters",
    "Outbox",
    "RestoredResult",
    "Scheduler",
    "SplitFunctions",
]


class Scheduler(CacheMixin, PlacementMixin, RecoveryMixin, SchedulerCore):
    """Jobs, tasks and agents, and the rules that move tasks between states, with every policy
    (see the module docstring)."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        limiter: RateLimiter | None = None,
        seed: int | None = None,
        split_functions: SplitFunctions = no_split_functions,
        cache: ResultCache | None = None,
    ) -> None:
        super().__init__(config, limiter=limiter, seed=seed, cache=cache)
        self._decomposition = Decomposition(
            self.port, self.config.decomposer, self.predictor, split_functions
        )
        self.use_split(self._decomposition)
        self._restorer = Restorer(self.port)

    # ----------------------------------------------------------------- restore (issue #3)

    def restore_job(
        self,
        job_id: str,
        name: str,
        specs: Sequence[TaskSpec],
        finished: Mapping[str, RestoredResult],
        now: float,
        *,
        submitted_at: float = 0.0,
        deadline_s: float = 0.0,
    ) -> Job:
        """Rebuild a journaled job (see ``core_restore.Restorer.restore_job``)."""
        return self._restorer.restore_job(
            job_id, name, specs, finished, now, submitted_at=submitted_at, deadline_s=deadline_s
        )

    def adopt_restored(self, running: Iterable[AttemptKey], now: float) -> None:
        """Adopt the attempts a reconnecting agent still runs (``core_restore.Restorer.adopt``)."""
        self._restorer.adopt(running, now)

    def release_restored(self, now: float) -> int:
        """End the reconnect grace (see ``core_restore.Restorer.release``)."""
        return self._restorer.release(now)

    def restored_waiting(self) -> int:
        """Restored tasks still held for the reconnect grace."""
        return self._restorer.waiting()
