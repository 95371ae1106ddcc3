"""What the cache is told: the controller's knobs (``CacheConfig``) and a handler's declared
traits (the core's :class:`~deerflow_controller.core.model.HandlerTraits`, read for its cache
fields)."""

from __future__ import annotations

from dataclasses import dataclass

from deerflow_controller.core.model import HandlerTraits

__all__ = ["DEFAULT_SIMILARITY_THRESHOLD", "NOT_CACHEABLE", "CacheConfig", "HandlerTraits"]

DEFAULT_SIMILARITY_THRESHOLD = 0.90
"""The cosine a near neighbour must reach (after the entity guard) to be served, chosen from the
threshold sweep of ``deerflow bench cache`` (docs/BENCHMARKS.md, issue #6): the lowest swept
threshold whose false-hit rate on the docs/WORKLOAD.md stream is at most 0.5 % of hits, half the 1 %
target (0.17 % at 0.90; 0.92 % at 0.85, too close; 5.3 % at 0.80). Handlers opt in by declaring
a threshold in ``HandlerInfo``; this is the value to declare."""


NOT_CACHEABLE = HandlerTraits()
"""Traits of a handler that declared nothing (every handler before it opts in)."""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The result cache's knobs. Defaults are for one controller holding about 100,000 entries."""

    max_bytes: int = 256 * 1024 * 1024
    """Bound on the bytes held (outputs + per-entry overhead); beyond it the entry with the
    lowest GreedyDual-Size-Frequency value is evicted."""
    max_payload_bytes: int = 64 * 1024
    """Payloads larger than this skip the cache (counted as ``too_large``): hashing them costs
    more than the lookup should, and such requests rarely repeat."""
    max_output_bytes: int = 4 * 1024 * 1024
    """Outputs larger than this are not stored (counted); one would crowd out thousands."""
    default_ttl_s: float = 24 * 3600.0
    """Freshness of an answer whose request names no time-sensitive word (docs/WORKLOAD.md)."""
    fresh_ttl_s: float = 3600.0
    """Freshness of an answer whose request mentions one of ``fresh_words`` or a year."""
    fresh_words: tuple[str, ...] = ("latest", "today", "news")
    """Words that make a request time-sensitive (whole words, any case)."""
    fresh_years: bool = True
    """A year (1900-2099) in the request makes it time-sensitive too."""
    warm_min_hits: int = 2
    """Accesses (first store included) that promote an entry from cold to warm."""
    hot_min_hits: int = 4
    """Accesses that promote an entry to hot."""
    demote_idle_s: float = 900.0
    """An entry not accessed for this long drops one tier at the next ``sweep``."""
    entry_overhead_bytes: int = 4096
    """Bytes charged per entry beyond its output (key, bookkeeping, a 1 KiB embedding row, its
    words and postings, the matrix's growth slack): ``deerflow bench cache`` measured about
    4,000 (``bytes_per_entry``). Exact-only entries cost less, so the bound errs safe."""
    min_cost_s: float = 0.001
    """Floor on the recompute cost an entry is valued at, so instant results still rank."""
    similarity_dim: int = 256
    """Dimensions of the hashed character n-gram embedding (1 KiB per row as float32)."""
    entity_guard: bool = True
    """Require each side's marked tokens (entities, numbers, years, time words) in the other
    before a similarity match. Off only to measure what it is worth (the benchmark does)."""
    learn_synonyms: bool = True
    """Learn synonym words from requests whose answers coincide (``synonyms``)."""
    synonym_min_overlap: float = 0.4
    """Jaccard overlap of two answers (their URLs, else lines) that counts as the same answer."""
    synonym_min_evidence: int = 2
    """Independent sightings of a word pair before it is merged."""
    learn_floor: float = 0.5
    """A missed request's best neighbour at or above this cosine is remembered, so that its
    answer can be compared with the neighbour's when it arrives."""
    similarity_candidates: int = 256
    """At most this many stored rows are scored per similarity lookup (the most recent ones of
    the query's most selective tokens), which bounds the lookup's cost at any index size."""
    preload: bool = True
    """Learn follow-up requests and propose speculative ones (only when asked, see
    ``ResultCache.speculate``)."""
    preload_budget: int = 8
    """Speculative tasks in flight at most, before any back-off."""
    preload_min_support: int = 2
    """Times a transition must have been seen before it is worth a speculative task."""
    preload_min_probability: float = 0.3
    """Share of a query's observed successors a candidate must have."""
    preload_useful_window_s: float = 1800.0
    """A preloaded answer not used within this long counts as wasted."""
    preload_min_ratio: float = 0.3
    """Below this useful-preload ratio the budget halves; above twice it, it grows by one."""
    preload_judge_every: int = 16
    """Preloads judged (used or wasted) between two budget decisions."""
    track_changes: bool = False
    """Keep a batch of stored and dropped entries for ``drain_changes`` (persistence)."""
