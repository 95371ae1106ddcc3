"""The result cache (issue #6): exact and similarity matching, tiers, in-flight dedup and
predictive preloading, as a pure component the scheduling core owns (no I/O, no clock reads:
every call that needs the time takes ``now``).

How the scheduler uses it (one ``ResultCache`` per controller; ``traits`` is the handler's
``HandlerTraits``, built from the agents' ``HandlerInfo``)::

    r = cache.lookup(spec.handler, traits, spec.payload, spec.cache, now, context=job_id)
    if isinstance(r, Hit):        # SUCCEEDED at once: output r.output,
        ...                       # Event.cache_layer = r.layer, Event.detail = r.reason
    elif isinstance(r, Miss):     # keep r.key on the task
        leader = cache.attach(r.key, (job_id, task_id))
        if leader is not None:    # an identical task runs: hold this one (not queued)
            ...
        # else queue it as usual; then, when it ends for good:
        #   followers = cache.complete(r.key, output, cost_s, now)  -> SUCCEEDED each follower
        #   followers = cache.fail(r.key)  (failed/cancelled/timed out) -> re-submit each
        #                                   follower as new: lookup again, attach again
        # (retries of the leader change nothing; a cancelled follower: cache.detach(key, ref))
    else:                         # Skip: run as if there were no cache; nothing to report
        ...
    # when slots are idle for a handler and its rate keys have room:
    for s in cache.speculate(job_id, handler, idle_slots, spare_quota, now):
        ...  # lowest-priority task (s.payload), attach(s.key, ref), then
             # complete(s.key, out, cost_s, now, speculative=True) or fail(s.key)
    cache.sweep(now)              # from the tick: expiry, demotion, preload judgement

Layers: exact (canonical request hash), similarity (hashed n-gram embedding, an entity guard,
and synonyms the cache learns from requests whose answers coincide: ``synonyms``), preload
(entries a speculative task stored). Tiers: hot, warm, cold by access frequency (``store``).

Costs (measured, docs/BENCHMARKS.md): a non-cacheable handler's lookup is an early return
(under 1 us); an exact hit canonicalises and hashes the payload (about 60 us for a search
request); the similarity layer scores at most ``similarity_candidates`` rows whatever the index
size (p50 0.3 ms, p99 0.67 ms of CPU at 100,000 entries). ``complete`` costs about the same as
a lookup; ``sweep`` is bounded by its ``budget``.

Not persisted: learned synonyms and preload statistics (a restarted cache relearns them).

Persistence (off by default) lives in ``persist.CacheFile``, driven by the shell:
``drain_changes`` every few seconds from a thread, ``restore`` at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The facade
from deerflow_controller.cache.config import (
    DEFAULT_SIMILARITY_THRESHOLD,
    NOT_CACHEABLE,
    CacheConfig,
    HandlerTraits,
)
from deerflow_controller.cache.inflight import InflightTable, TaskRef
from deerflow_controller.cache.keys import RequestKey, SkipReason, canonicalise
from deerflow_controller.cache.preload import Preloader, Speculation

# The parts (for tests and benchmarks)
from deerflow_controller.cache.store import Entry, Origin, Tier, TieredStore
from deerflow_controller.cache.synonyms import SynonymLearner

if TYPE_CHECKING:
    from deerflow_controller.cache.persist import CacheFile
    from deerflow_controller.cache.result_cache import (
        ChangeBatch,
        Hit,
        Lookup,
        Miss,
        PersistedEntry,
        ResultCache,
        Skip,
    )
    from deerflow_controller.cache.similarity import SimilarityIndex

# What embeds and indexes (numpy) is loaded on first use: the command line imports CacheConfig
# for its defaults before it spawns the local agents, and should not wait for numpy to do so.
_LAZY = {
    "CacheFile": "persist",
    **dict.fromkeys(
        ("ChangeBatch", "Hit", "Lookup", "Miss", "PersistedEntry", "ResultCache", "Skip"),
        "result_cache",
    ),
    "SimilarityIndex": "similarity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_SIMILARITY_THRESHOLD",
    "NOT_CACHEABLE",
    "CacheConfig",
    "CacheFile",
    "ChangeBatch",
    "Entry",
    "HandlerTraits",
    "Hit",
    "InflightTable",
    "Lookup",
    "Miss",
    "Origin",
    "PersistedEntry",
    "Preloader",
    "RequestKey",
    "ResultCache",
    "SimilarityIndex",
    "Skip",
    "SkipReason",
    "Speculation",
    "SynonymLearner",
    "TaskRef",
    "Tier",
    "TieredStore",
    "canonicalise",
]
