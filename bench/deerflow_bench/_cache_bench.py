"""``deerflow bench cache``: the result cache against docs/WORKLOAD.md's repetition model, offline.

The stream (:mod:`._cache_workload`) tags every request with its true intent. That lets the
benchmark count what the cache served correctly, what it served wrongly (an answer to another
intent: a false hit) and what a perfect cache could have served (the oracle: every request
whose intent was answered before and is still fresh); then lookup latency at scale and the
memory an entry costs."""

from __future__ import annotations

import gc
import os
import random
import statistics
import time
import tracemalloc
from dataclasses import replace
from typing import Any

from deerflow_controller.cache import CacheConfig, HandlerTraits, Hit, Miss, ResultCache, Skip
from deerflow_controller.core.model import CachePolicy

from ._cache_workload import Request, Workload, answer, search_payload

SEARCH = HandlerTraits(
    cacheable=True, similarity_field="query", similarity_threshold=0.8
)  # threshold replaced per run
CRAWL = HandlerTraits(cacheable=True)
OTHER = HandlerTraits()


# --------------------------------------------------------------------------- replay


def oracle_hits(stream: list[Request], lexical: bool = False) -> int:
    """Requests a perfect cache serves: intent answered before and the answer still fresh.

    ``lexical``: only if it was answered for a request with the same synonyms (the ceiling of
    any matcher that knows no synonyms: it may reorder, drop fillers, ignore case)."""
    answered: dict[object, float] = {}
    hits = 0
    for q in stream:
        k = (q.intent, q.words) if lexical else q.intent
        t0 = answered.get(k)
        if t0 is not None and q.t - t0 < q.ttl_s:
            hits += 1
        else:
            answered[k] = q.t
    return hits


def replay(
    stream: list[Request],
    threshold: float,
    preload: bool,
    land_after_s: float = 2.0,
    guard: bool = True,
    learn: bool = True,
) -> dict[str, Any]:
    """Run the stream through a fresh ``ResultCache``; every miss is computed at once. A
    speculative task's result lands ``land_after_s`` after it is proposed."""
    cache = ResultCache(CacheConfig(preload=preload, entity_guard=guard, learn_synonyms=learn))
    search = replace(SEARCH, similarity_threshold=threshold)
    intent_of: dict[bytes, object] = {}
    pending: list[tuple[float, Any]] = []
    false_hits = 0
    req_of: dict[bytes, Request] = {}
    for q in stream:
        while pending and pending[0][0] <= q.t:
            land, spec = pending.pop(0)
            cache.complete(spec.key, answer(req_of[spec.key.digest]), 1.5, land, speculative=True)
        traits = search if q.handler == "search" else CRAWL
        res = cache.lookup(q.handler, traits, q.payload, CachePolicy.DEFAULT, q.t, context=q.job)
        if not isinstance(res, Skip):
            req_of[res.key.digest] = q
        if isinstance(res, Hit):
            intent_of.setdefault(res.key.digest, q.intent)
            if intent_of.get(res.source) != q.intent:
                false_hits += 1
        elif isinstance(res, Miss):
            intent_of[res.key.digest] = q.intent
            cache.complete(res.key, answer(q), 1.5, q.t)
        if preload:
            for spec in cache.speculate(q.job, q.handler, 4, 10.0, q.t):
                pending.append((q.t + land_after_s, spec))
                pending.sort(key=lambda p: p[0])
        cache.sweep(q.t, budget=1000)
    st = cache.stats()
    n = len(stream)
    hits = st["hits"]
    return {
        "hit_rate": hits / n,
        "layers": {k: v["hits"] / n for k, v in st["layers"].items()},
        "false_hits": false_hits,
        "false_hit_rate": false_hits / hits if hits else 0.0,
        "preload": st["preload"],
        "synonyms": st["synonyms"],
    }


# --------------------------------------------------------------------------- at scale


def _filled(n: int, seed: int, output: bytes) -> tuple[ResultCache, list[bytes]]:
    """A cache holding ``n`` distinct search entries (random intents and wordings), each output
    ``output`` made unique by its entry's number."""
    w = Workload(seed)
    cache = ResultCache(CacheConfig(preload=False, max_bytes=1 << 40))
    traits = replace(SEARCH, similarity_threshold=0.9)
    payloads: list[bytes] = []
    seen: set[str] = set()
    while len(payloads) < n:
        text = w.random_query().text()
        if text in seen:
            continue
        seen.add(text)
        payload = search_payload(text)
        res = cache.lookup("search", traits, payload, CachePolicy.DEFAULT, 0.0)
        if isinstance(res, Miss):
            cache.complete(res.key, b"%d:" % len(payloads) + output, 1.5, 0.0)
            payloads.append(payload)
    return cache, payloads


def latency(
    entries: int, lookups: int, seed: int, threshold: float, rounds: int = 5
) -> dict[str, Any]:
    """Per-lookup wall time with ``entries`` stored: stream requests (hits and misses of both
    layers), exact hits, and a non-cacheable handler's early return. The stream is timed in
    ``rounds`` rounds and the round with the median p99 is reported (all rounds' p99 are
    listed). On a shared machine the wall-clock tail is mostly other processes preempting this
    one (a time slice is about 4 ms), so the lookup's own CPU time (``thread_time``) is reported
    beside it, with the load average when the measurement started."""
    cache, payloads = _filled(entries, seed, b"x" * 64)
    stream = [q for q in Workload(seed + 1).jobs(lookups // 4 + 1) if q.handler == "search"]
    traits = replace(SEARCH, similarity_threshold=threshold)
    runs: list[list[float]] = []
    cpu: list[float] = []
    load = os.getloadavg()[0]
    for _ in range(rounds):
        samples: list[float] = []
        for q in stream[:lookups]:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            cache.lookup("search", traits, q.payload, CachePolicy.DEFAULT, 1.0)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            cpu.append((time.thread_time_ns() - c0) / 1e6)
        runs.append(samples)
    runs.sort(key=lambda xs: _pct(xs, 99))
    samples = runs[len(runs) // 2]
    exact: list[float] = []
    rng = random.Random(seed)
    for _ in range(min(lookups, 5000)):
        p = payloads[rng.randrange(len(payloads))]
        t0 = time.perf_counter_ns()
        cache.lookup("search", traits, p, CachePolicy.DEFAULT, 1.0)
        exact.append((time.perf_counter_ns() - t0) / 1e6)
    n = 100_000
    t0 = time.perf_counter_ns()
    for _ in range(n):
        cache.lookup("echo", OTHER, b"{}", CachePolicy.DEFAULT, 1.0)
    skip_us = (time.perf_counter_ns() - t0) / 1e3 / n
    return {
        "entries": len(cache.store.entries),
        "lookups": len(samples),
        "rounds": rounds,
        "lookup_p50_ms": _pct(samples, 50),
        "lookup_p99_ms": _pct(samples, 99),
        "lookup_p99_ms_all_rounds": [round(_pct(xs, 99), 3) for xs in runs],
        "lookup_cpu_p50_ms": _pct(cpu, 50),
        "lookup_cpu_p99_ms": _pct(cpu, 99),
        "load_average_1m": load,
        "lookup_max_ms": max(samples),
        "exact_hit_p50_ms": _pct(exact, 50),
        "exact_hit_p99_ms": _pct(exact, 99),
        "not_cacheable_us": skip_us,
    }


def bytes_per_entry(entries: int, seed: int) -> float:
    """Traced memory per entry beyond its 64-byte output (key, bookkeeping, embedding row,
    posting lists), at ``entries`` entries."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cache, payloads = _filled(entries, seed, b"x" * 64)
    del payloads
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    n = len(cache.store.entries)
    return used / n - 64


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


# --------------------------------------------------------------------------- the benchmark

SWEEP = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
MAX_FALSE_HIT_RATE = 0.005
"""The default threshold is the lowest swept one at or below half the 1 % target."""


def cache_bench(
    seed: int = 7,
    jobs: int = 3000,
    entries: int = 100_000,
    lookups: int = 20_000,
    memory_entries: int = 20_000,
    threshold: float | None = None,
) -> dict[str, Any]:
    """The whole benchmark as one JSON-able dict."""
    from deerflow_controller.cache import DEFAULT_SIMILARITY_THRESHOLD

    w = Workload(seed)
    stream = w.jobs(jobs)
    n = len(stream)
    oracle = oracle_hits(stream) / n
    lexical = oracle_hits(stream, lexical=True) / n
    sweep = []
    for th in SWEEP:
        r = replay(stream, th, preload=False)
        off = replay(stream, th, preload=False, guard=False)
        sweep.append(
            {
                "threshold": th,
                "hit_rate": round(r["hit_rate"], 4),
                "similarity_hit_rate": round(r["layers"]["similarity"], 4),
                "false_hit_rate": round(r["false_hit_rate"], 5),
                "no_guard_hit_rate": round(off["hit_rate"], 4),
                "no_guard_false_hit_rate": round(off["false_hit_rate"], 5),
            }
        )
    chosen = next(
        (s["threshold"] for s in sweep if s["false_hit_rate"] <= MAX_FALSE_HIT_RATE), SWEEP[-1]
    )
    use = threshold if threshold is not None else DEFAULT_SIMILARITY_THRESHOLD
    main = replay(stream, use, preload=True)
    exact_only = replay(stream, 0.0, preload=False)
    lat = latency(entries, lookups, seed, use)
    bpe = bytes_per_entry(memory_entries, seed)
    no_preload = main["hit_rate"] - main["layers"]["preload"]
    ws = w.stats
    return {
        "workload": "cache",
        "seed": seed,
        "jobs": jobs,
        "requests": n,
        "threshold": use,
        "threshold_from_sweep": chosen,
        "hit_rate": main["hit_rate"],
        "oracle_hit_rate": oracle,
        "ratio_to_ideal": main["hit_rate"] / oracle if oracle else 0.0,
        "ratio_to_ideal_without_preload": no_preload / oracle if oracle else 0.0,
        "lexical_oracle_hit_rate": lexical,
        "ratio_to_lexical_oracle": no_preload / lexical if lexical else 0.0,
        "exact_hit_rate": main["layers"]["exact"],
        "similarity_hit_rate": main["layers"]["similarity"],
        "preload_hit_rate": main["layers"]["preload"],
        "exact_only_hit_rate": exact_only["hit_rate"],
        "false_hit_rate": main["false_hit_rate"],
        "false_hits": main["false_hits"],
        "lookup_p50_ms": lat["lookup_p50_ms"],
        "lookup_p99_ms": lat["lookup_p99_ms"],
        "latency": lat,
        "bytes_per_entry": round(bpe),
        "bytes_per_entry_basis": f"traced memory at {memory_entries} entries, 64-byte outputs "
        "excluded",
        "preload": main["preload"],
        "sweep": sweep,
        "stream": {
            "identical_plans": ws.identical_plans,
            "paraphrased_plans": ws.paraphrased_plans,
            "new_plans": ws.new_plans,
            "near_dup_pair_share": ws.near_dup_pairs / ws.pairs if ws.pairs else 0.0,
            "sibling_pair_share": ws.sibling_pairs / ws.pairs if ws.pairs else 0.0,
            "searches": sum(1 for q in stream if q.handler == "search"),
            "crawls": sum(1 for q in stream if q.handler == "crawl"),
        },
        "median_job_searches": statistics.median(
            [c for c in _per_job(stream).values() if c] or [0]
        ),
    }


def _per_job(stream: list[Request]) -> dict[str, int]:
    out: dict[str, int] = {}
    for q in stream:
        out[q.job] = out.get(q.job, 0) + (q.handler == "search")
    return out
