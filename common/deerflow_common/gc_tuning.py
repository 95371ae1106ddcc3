"""Garbage-collector settings for the daemons, which hold many live objects.

A controller holds every task of every retained job (the task, its spec, its events: a few
hundred thousand container objects for a 20,000-task job). With CPython's default thresholds
(700, 10, 10) the cyclic collector runs a young collection every 700 net allocations and a full
one, traversing every live object, every hundred of those: on the no-op benchmark
(``deerflow bench noop --tasks 20000``, 2-core VM) the controller spent about a quarter of its
CPU in the collector, two full collections of about 140 ms each per run among them. The daemons'
objects are rarely cyclic and mostly long-lived, so they freeze what start-up created (imports,
configuration: never collectable) and collect young objects every 50,000 net allocations, with
full collections a hundred times rarer. Measured: no-op throughput 8,900-10,200 -> 12,700-14,100
tasks/s. Memory held in uncollected cycles stays bounded by the thresholds.

The middle generation is collected after every second young collection (not every twentieth):
each surviving object is examined there once either way, so the collector's work is the same,
but a middle collection then holds at most about 200,000 objects instead of a million. At 20 a
controller serving 2,200 tasks/s stopped for 282-297 ms about once a minute (a dip of a third in
that second's throughput, the only window of `deerflow bench tuner` outside 5 % on a quiet
machine); the oldest generation's threshold is raised to match (a full collection after the
same 2,000 young ones as before, and CPython's own rule still waits for the long-lived objects
to grow by a quarter).

A large job is built with the collector paused, and what it built is then frozen as start-up is
(:class:`BulkFreezer`): a 20,000-task job's tasks, specs and events (about 60,000 objects that
live until the job expires) otherwise pass through the young and middle generations, two
traversals each, while the controller ingests the job and its agents wait. Measured: traced
no-op throughput +7-16 %, the controller's CPU a round -10 % (``deerflow bench tracing``,
3 interleaved pairs, docs/BENCHMARKS.md). Frozen objects are never examined, so cyclic garbage
among them (an expired job's tasks and their job refer to each other) would stay; the freezer
therefore gives everything frozen back to the collector and runs one full collection at the
next large job after ``SWEEP_INTERVAL_S`` (a stall of a full collection, as CPython's own
full collections under these thresholds are): memory in uncollected cycles stays bounded by
that interval's expired jobs.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

__all__ = ["DAEMON_THRESHOLDS", "SWEEP_INTERVAL_S", "BulkFreezer", "tune_gc_for_daemon"]

DAEMON_THRESHOLDS = (50_000, 2, 1_000)


def tune_gc_for_daemon() -> None:
    """Call once, after start-up imports and before serving: move what exists now out of the
    collector's view and raise its thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*DAEMON_THRESHOLDS)


SWEEP_INTERVAL_S = 600.0
"""Longest a frozen object waits before a full collection looks at it again (the default job
retention: an expired job's cycles are collected at most about this long after it expired)."""


class BulkFreezer:
    """Builds large, long-lived allocations with the cyclic collector paused, then freezes
    everything alive (``gc.freeze``, O(1)), so that the collector's young generations do not
    traverse them twice on their way to the oldest. See the module docstring for the sweep
    that keeps cyclic garbage among frozen objects bounded. ``clock`` is seconds (monotonic)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._first_frozen_at: float | None = None
        """When this freezer first froze since its last sweep (None: nothing frozen since)."""

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """Pause the collector for the block, and freeze what is alive when it ends well (a
        block that raises built nothing to keep: the collector just resumes). Nothing is done
        when the collector is off already (someone else paused it: it is theirs to resume).
        Sweeps first when the sweep is due."""
        if not gc.isenabled():
            yield
            return
        now = self._clock()
        if self._first_frozen_at is not None and now - self._first_frozen_at >= (
            self._sweep_interval_s
        ):
            self.sweep()
        gc.disable()
        try:
            yield
        except BaseException:
            gc.enable()
            raise
        gc.freeze()
        gc.enable()
        if self._first_frozen_at is None:
            self._first_frozen_at = now

    def sweep(self) -> None:
        """Give every frozen object back to the oldest generation (O(1)) and collect all
        generations once, so cyclic garbage frozen meanwhile is freed."""
        gc.unfreeze()
        gc.collect()
        self._first_frozen_at = None
