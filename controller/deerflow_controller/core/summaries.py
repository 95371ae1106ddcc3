"""The core's policy state as plain data, for every view of it: ``GetStats`` (admin_service),
the dashboard's ``/api/stats`` and ``/metrics`` (observability). One reading, so the views agree."""

from __future__ import annotations

from typing import Any

from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.recovery import CircuitState

BAD_INPUT_SKIPS = frozenset({"too_large", "unhashable"})
"""Cache skips caused by the payload (counted, never an error), not by a policy's choice."""


def cache_summary(sched: Scheduler) -> dict[str, Any]:
    """Hits per layer (in-flight dedup included), misses, skips, size, evictions, preloads."""
    cache = sched.cache
    if cache is None:
        return {"enabled": False}
    st = cache.stats()
    hits = {k: v["hits"] for k, v in sorted(st["layers"].items())}
    hits["inflight"] = st["inflight"]["attached"]
    preload = st.get("preload", {})
    return {
        "enabled": True,
        "hit_rate": round(st["hit_rate"], 4),
        "lookups": st["lookups"],
        "hits": hits,
        "misses": st["misses"],
        "skips": dict(sorted(st["skips"].items())),
        "skipped": sum(n for r, n in st["skips"].items() if r in BAD_INPUT_SKIPS),
        "entries": st["entries"],
        "bytes": st["bytes"],
        "evictions": {t: v["evictions"] for t, v in sorted(st["tiers"].items())},
        "preloads": int(preload.get("proposed", 0)),
        "preload_useful_ratio": round(float(preload.get("useful_ratio", 0.0)), 3),
    }


def circuit_summary(sched: Scheduler, now: float) -> list[dict[str, Any]]:
    """Circuits that are not closed or have tripped, with why they last opened."""
    out = []
    for key, snap in sorted(sched.breakers.snapshot().items()):
        if snap.state == CircuitState.CLOSED and not snap.trips:
            continue
        is_open = snap.state == CircuitState.OPEN
        out.append(
            {
                "key": key,
                "state": snap.state.name.lower(),
                "trips": snap.trips,
                "open_for_s": round(max(0.0, snap.until - now), 1) if is_open else 0.0,
                "reason": sched.circuit_reasons.get(key, ""),
            }
        )
    return out


def quarantine_summary(sched: Scheduler, now: float) -> list[dict[str, Any]]:
    """(agent, handler) pairs held out for failing, with why and for how long still."""
    return [
        {"agent": a, "handler": h, "reason": why, "for_s": round(max(0.0, until - now), 1)}
        for (a, h), (why, until) in sorted(sched.quarantine_reasons.items())
    ]
