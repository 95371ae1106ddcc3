"""The pure scheduling core: fed events and the current time, it answers with decisions.

Nothing here does I/O, sleeps or reads a clock. The shell (``server.py``) calls one method per
event (a job submitted, an agent joined, a batch of results, a tick) passing ``now`` in seconds,
then takes the decisions from :attr:`Scheduler.outbox`: assignments and cancels per agent, and
the jobs that have new events. Unit tests drive it with a fake clock and assert exact decisions.

:class:`Scheduler` is the state machine (``core.py``) plus one policy object per area, each
owning its state, calling its pure policy module and talking to the core through the core's
``CorePort`` (``core_port.py``): ``core_cache`` (result cache, in-flight dedup, preloading),
``core_split`` (decomposer), ``core_placement`` (predictor, balancer, stealing),
``core_recovery`` (retries, circuit breakers, quarantine) and ``core_restore`` (failover,
issue #3). The scheduler builds them, hands them to the core (``use_cache``, ``use_split``,
``use_placement``, ``use_recovery``; the core runs with any subset, ``core_hooks``' stand-ins
answering for the rest) and forwards restore's public methods.
"""

from __future__ import annotations

from collections.abc import Iterable

from deerflow_controller.cache import ResultCache
from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.cache_policy import Caching
from deerflow_controller.core.model import AttemptKey, Job
from deerflow_controller.core.placement_policy import Placement
from deerflow_controller.core.recovery_policy import Recovery
from deerflow_controller.core.restore_policy import Restorer
from deerflow_controller.core.split_policy import Decomposition, SplitFunctions, no_split_functions
from deerflow_controller.core.state import SchedulerCore
from deerflow_controller.core.types import (
    PRELOAD_PRIORITY,
    AttemptResult,
    Counters,
    Outbox,
    RestoredJob,
    RestoredResult,
)
from deerflow_controller.ratelimit import RateLimiter

__all__ = [
    "PRELOAD_PRIORITY",
    "AttemptResult",
    "Counters",
    "Outbox",
    "RestoredJob",
    "RestoredResult",
    "Scheduler",
    "SplitFunctions",
]


class Scheduler(SchedulerCore):
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
        """Build the core and hand it every policy (the cache only when ``cache`` is given)."""
        super().__init__(config, limiter=limiter)
        cfg = self.config
        self._caching = None if cache is None else Caching(self.port, cache)
        if self._caching is not None:
            self.use_cache(self._caching)
        placement = self._placement = Placement(self.port, cfg.predictor, cfg.balancer)
        self.use_placement(placement)
        self.predictor = placement.predictor
        """Expected durations and costs per handler and agent (placement's; the decomposer
        sizes chunks with it too)."""
        self.balancer = placement.balancer
        """The agents' predicted backlogs (placement's)."""
        self.accuracy = placement.accuracy
        """Per handler, absolute percentage errors of recent predictions (for MdAPE)."""
        self._decomposition = Decomposition(
            self.port, cfg.decomposer, placement.predictor, split_functions
        )
        self.use_split(self._decomposition)
        recovery = self._recovery = Recovery(self.port, cfg.recovery, seed=seed)
        self.use_recovery(recovery)
        self.quarantine = recovery.quarantine
        self.circuit_reasons = recovery.circuit_reasons
        """Why each circuit last opened (for stats and the dashboard)."""
        self.quarantine_reasons = recovery.quarantine_reasons
        """(agent, handler) -> (why, until) while quarantined."""
        self._restorer = Restorer(self.port)
        self._unrecorded_holder = self._restorer.holds

    # ----------------------------------------------------------------- restore (issue #3)

    def restore_job(self, record: RestoredJob, now: float) -> Job:
        """Rebuild a journaled job (see ``core_restore.Restorer.restore_job``)."""
        return self._restorer.restore_job(record, now)

    def adopt_restored(self, running: Iterable[AttemptKey], now: float) -> None:
        """Adopt the attempts a reconnecting agent still runs (``core_restore.Restorer.adopt``)."""
        self._restorer.adopt(running, now)

    def release_restored(self, now: float) -> int:
        """End the reconnect grace (see ``core_restore.Restorer.release``)."""
        return self._restorer.release(now)

    def restored_waiting(self) -> int:
        """Restored tasks still held for the reconnect grace."""
        return self._restorer.waiting()
