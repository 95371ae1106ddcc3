"""The daemons' collector settings (see deerflow_common.gc_tuning)."""

from __future__ import annotations

import gc
import json
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


# BulkFreezer: a large job built with the collector paused, then frozen; a full sweep later.
# These run in a child process: freezing this one would keep the test run's garbage for good.
_FREEZER = """
import gc, json, weakref
from deerflow_common.gc_tuning import BulkFreezer, tune_gc_for_daemon

tune_gc_for_daemon()
now = [0.0]
freezer = BulkFreezer(clock=lambda: now[0], sweep_interval_s=60.0)
out = {}
full = []

def on_gc(phase, info):
    if phase == "stop" and info["generation"] == 2:
        full.append(1)


gc.callbacks.append(on_gc)

class Node:
    def __init__(self):
        self.me = self  # a cycle: only the collector frees it

kept = []
start = gc.get_freeze_count()
with freezer.building():
    out["paused"] = not gc.isenabled()
    kept.extend([i] for i in range(50_000))
    cyclic = [Node() for _ in range(1_000)]
    probe = weakref.ref(cyclic[0])
out["enabled_after"] = gc.isenabled()
out["frozen"] = gc.get_freeze_count() - start
del cyclic
gc.collect()
out["cycles_kept_while_frozen"] = probe() is not None

try:
    with freezer.building():
        kept.append([0])
        raise ValueError("refused")
except ValueError:
    pass
out["enabled_after_refusal"] = gc.isenabled()

gc.disable()
with freezer.building():
    out["left_off"] = not gc.isenabled()
gc.enable()

now[0] = 59.0
full.clear()
with freezer.building():
    pass
out["no_sweep_before_interval"] = not full

now[0] = 61.0
with freezer.building():
    out["swept"] = bool(full)
freezer.sweep()
out["thawed"] = gc.get_freeze_count() == 0
out["cycles_freed_by_sweep"] = probe() is None
print(json.dumps(out))
"""


def test_a_large_build_is_frozen_and_a_sweep_later_frees_the_cycles_frozen_with_it() -> None:
    result = json.loads(
        subprocess.run(
            [sys.executable, "-c", _FREEZER], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert result["paused"] and result["enabled_after"]
    assert result["frozen"] >= 50_000  # the build's objects left the young generations
    assert result["enabled_after_refusal"]  # a build that raised: the collector resumes
    assert result["left_off"]  # paused by someone else: left to them
    assert result["no_sweep_before_interval"] and result["swept"]
    assert result["cycles_kept_while_frozen"]  # what the sweep is for
    assert result["thawed"] and result["cycles_freed_by_sweep"]
