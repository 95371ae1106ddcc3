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
"""

from __future__ import annotations

import gc

__all__ = ["DAEMON_THRESHOLDS", "tune_gc_for_daemon"]

DAEMON_THRESHOLDS = (50_000, 2, 1_000)


def tune_gc_for_daemon() -> None:
    """Call once, after start-up imports and before serving: move what exists now out of the
    collector's view and raise its thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*DAEMON_THRESHOLDS)
