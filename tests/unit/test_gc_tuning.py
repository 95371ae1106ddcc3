"""The daemons' collector settings (see deerflow_common.gc_tuning)."""

from __future__ import annotations

import gc

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
