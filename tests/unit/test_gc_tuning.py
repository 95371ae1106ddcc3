"""The daemons' collector settings (see deerflow_common.gc_tuning)."""

from __future__ import annotations

import gc
import subprocess
import sys

from deerflow_common.gc_tuning import DAEMON_THRESHOLDS, tune_gc_for_daemon


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_gc_for_daemon()
        assert gc.get_threshold() == DAEMON_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert DAEMON_THRESHOLDS[0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


_PROBE = """
import gc
from deerflow_common.gc_tuning import tune_gc_for_daemon

tune_gc_for_daemon()
seen = []

def probe(phase, info):
    if phase == "start" and info["generation"] == 1:
        seen.append(len(gc.get_objects(0)) + len(gc.get_objects(1)))

gc.callbacks.append(probe)
kept = []
for i in range(3_000_000):  # a controller's long-lived tasks, specs and events
    kept.append([i])
print(len(seen), max(seen))
"""


def test_no_collection_short_of_a_full_one_walks_a_million_objects() -> None:
    # Each object a middle-generation collection holds costs its pause (~0.3 us): at (50000,
    # 20, 100) it held ~1,000,000 objects, a 282 ms stop of a serving controller once a minute.
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    collections, largest = int(out[0]), int(out[1])
    assert collections > 0
    assert largest <= (DAEMON_THRESHOLDS[1] + 3) * DAEMON_THRESHOLDS[0] <= 250_000, largest
