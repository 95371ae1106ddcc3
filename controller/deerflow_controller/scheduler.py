"""The pure scheduling core: fed events and the current time, it answers with decisions.

Nothing here does I/O, sleeps or reads a clock. The shell (``server.py``) calls one method per
event (a job submitted, an agent joined, a batch of results, a tick) passing ``now`` in seconds,
then takes the decisions from :attr:`Scheduler.outbox`: assignments and cancels per agent, and
the jobs that have new events. Unit tests drive it with a fake clock and assert exact decisions.

:class:`Scheduler` is the state machine (``core.py``) plus one mixin per policy area, each
calling its pure policy module: ``core_cache`` (result cache, in-flight dedup, preloading),
``core_split`` (decomposer), ``core_placement`` (balancer, predictor, stealing),
``core_recovery`` (circuit breakers, quarantine) and ``core_restore`` (failover, issue #3).
"""

from __future__ import annotations

from .core import (
    PRELOAD_PRIORITY,
    AttemptResult,
    Counters,
    Outbox,
    RestoredResult,
    SchedulerCore,
    SplitFunctions,
)
from .core_cache import CacheMixin
from .core_placement import PlacementMixin
from .core_recovery import RecoveryMixin
from .core_restore import RestoreMixin
from .core_split import SplitMixin

__all__ = [
    "PRELOAD_PRIORITY",
    "AttemptResult",
    "Counters",
    "Outbox",
    "RestoredResult",
    "Scheduler",
    "SplitFunctions",
]


class Scheduler(RestoreMixin, CacheMixin, SplitMixin, PlacementMixin, RecoveryMixin, SchedulerCore):
    """Jobs, tasks and agents, and the rules that move tasks between states, with every policy
    (see the module docstring)."""
