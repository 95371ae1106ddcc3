"""The facade: policies, layers, skips, dedup through it, stats (fake clock: plain floats)."""

from __future__ import annotations

import json

from deerflow_controller.cache import (
    CacheConfig,
    HandlerTraits,
    Hit,
    Miss,
    RequestKey,
    ResultCache,
    Skip,
    SkipReason,
)
from deerflow_controller.core.model import CachePolicy

SEARCH = HandlerTraits(cacheable=True, similarity_field="query", similarity_threshold=0.9)
EXACT = HandlerTraits(cacheable=True)
D = CachePolicy.DEFAULT
NONDET = HandlerTraits(cacheable=True, nondeterministic=True)


def q(text: str, **extra: object) -> bytes:
    return json.dumps({"query": text, "max_results": 5, **extra}).encode()


def miss(c: ResultCache, payload: bytes, now: float, traits: HandlerTraits = SEARCH) -> RequestKey:
    r = c.lookup("search", traits, payload, CachePolicy.DEFAULT, now)
    assert isinstance(r, Miss)
    return r.key


def test_a_stored_answer_is_served_exactly_until_it_expires() -> None:
    c = ResultCache()
    key = miss(c, q("EV sales in China"), 0.0)
    c.complete(key, b"answer", 2.0, 0.0)
    r = c.lookup("search", SEARCH, q("EV sales in China"), CachePolicy.DEFAULT, 100.0)
    assert isinstance(r, Hit) and r.output == b"answer" and r.layer == "exact"
    assert r.age_s == 100.0 and "exact" in r.reason
    assert isinstance(c.lookup("search", SEARCH, q("EV sales in China"), D, 86_400.0), Miss)


def test_freshness_words_shorten_the_ttl() -> None:
    c = ResultCache()
    key = miss(c, q("latest EV sales in China"), 0.0)
    c.complete(key, b"a", 1.0, 0.0)
    assert isinstance(c.lookup("search", SEARCH, q("latest EV sales in China"), D, 3599.0), Hit)
    assert isinstance(c.lookup("search", SEARCH, q("latest EV sales in China"), D, 3600.0), Miss)


def test_a_handler_ttl_overrides_the_freshness_rules() -> None:
    c = ResultCache()
    traits = HandlerTraits(cacheable=True, cache_ttl_s=10.0)
    key = miss(c, q("EV sales"), 0.0, traits)
    c.complete(key, b"a", 1.0, 0.0)
    assert isinstance(c.lookup("search", traits, q("EV sales"), D, 9.0), Hit)
    assert isinstance(c.lookup("search", traits, q("EV sales"), D, 10.0), Miss)


def test_policies_and_traits_decide_whether_the_cache_is_used() -> None:
    c = ResultCache()
    p = q("x")
    assert c.lookup("echo", HandlerTraits(), p, CachePolicy.DEFAULT, 0.0) == Skip(
        SkipReason.NOT_CACHEABLE
    )
    assert isinstance(c.lookup("llm", NONDET, p, CachePolicy.DEFAULT, 0.0), Skip)
    assert isinstance(c.lookup("llm", NONDET, p, CachePolicy.ON, 0.0), Miss)
    assert c.lookup("search", SEARCH, p, CachePolicy.OFF, 0.0) == Skip(SkipReason.POLICY_OFF)
    assert c.stats()["skips"] == {
        "policy_off": 1, "not_cacheable": 1, "nondeterministic": 1, "too_large": 0,
        "unhashable": 0,
    }  # fmt: skip


def test_refresh_runs_the_task_and_overwrites_the_entry() -> None:
    c = ResultCache()
    c.complete(miss(c, q("x"), 0.0), b"old", 1.0, 0.0)
    r = c.lookup("search", SEARCH, q("x"), CachePolicy.REFRESH, 5.0)
    assert isinstance(r, Miss) and r.key.refresh
    c.complete(r.key, b"new", 1.0, 5.0)
    hit = c.lookup("search", SEARCH, q("x"), CachePolicy.DEFAULT, 6.0)
    assert isinstance(hit, Hit) and hit.output == b"new"


def test_huge_and_unhashable_payloads_skip_the_cache_and_are_counted() -> None:
    c = ResultCache(CacheConfig(max_payload_bytes=1024))
    assert c.lookup("search", SEARCH, b"{" + b" " * 2000 + b"}", D, 0.0) == Skip(
        SkipReason.TOO_LARGE
    )
    assert c.lookup("search", SEARCH, b'{"query": NaN}', D, 0.0) == Skip(SkipReason.UNHASHABLE)
    assert c.lookup("search", SEARCH, b"[" * 200 + b"]" * 200, D, 0.0) == Skip(
        SkipReason.UNHASHABLE
    )
    s = c.stats()["skips"]
    assert s["too_large"] == 1 and s["unhashable"] == 2


def test_invalid_json_and_binary_payloads_are_cached_as_bytes() -> None:
    c = ResultCache()
    for payload in (b"{broken", b"\xff\xfe\x00binary"):
        key = miss(c, payload, 0.0, EXACT)
        c.complete(key, b"out", 1.0, 0.0)
        assert isinstance(c.lookup("search", EXACT, payload, D, 1.0), Hit)


def test_similar_wording_is_served_from_the_similarity_layer() -> None:
    c = ResultCache()
    c.complete(miss(c, q("JD delivery market share in China"), 0.0), b"jd", 1.0, 0.0)
    r = c.lookup("search", SEARCH, q("market share of JD delivery, China"), D, 1.0)
    assert isinstance(r, Hit) and r.layer == "similarity" and r.output == b"jd"
    assert r.score >= 0.9 and "similarity" in r.reason


def test_templated_siblings_are_not_served_each_others_answers() -> None:
    c = ResultCache(CacheConfig())
    loose = HandlerTraits(cacheable=True, similarity_field="query", similarity_threshold=0.5)
    c.complete(miss(c, q("JD delivery market share in China"), 0.0, loose), b"jd", 1.0, 0.0)
    for sibling in (
        "Meituan delivery market share in China",
        "JD delivery market share in India",
        "JD delivery market share in China 2025",
        "JD delivery market share in China news",
    ):
        assert isinstance(c.lookup("search", loose, q(sibling), D, 1.0), Miss), sibling


def test_similarity_only_compares_requests_with_equal_options() -> None:
    c = ResultCache()
    c.complete(miss(c, q("JD delivery market share"), 0.0), b"jd", 1.0, 0.0)
    other = q("market share of JD delivery", max_results=10)
    assert isinstance(c.lookup("search", SEARCH, other, D, 1.0), Miss)


def test_a_similarity_hit_respects_the_askers_freshness() -> None:
    c = ResultCache()
    c.complete(miss(c, q("JD delivery market share"), 0.0), b"jd", 1.0, 0.0)
    assert isinstance(c.lookup("search", SEARCH, q("JD delivery market share"), D, 7200.0), Hit)
    fresh = c.lookup("search", SEARCH, q("latest JD delivery market share"), D, 7200.0)
    assert isinstance(fresh, Miss)


def test_identical_tasks_in_flight_share_the_leaders_result() -> None:
    c = ResultCache()
    k1, k2 = miss(c, q("x"), 0.0), miss(c, q("x"), 0.1)
    assert c.attach(k1, ("j1", "a")) is None
    assert c.attach(k2, ("j2", "b")) == ("j1", "a")
    assert c.complete(k1, b"out", 1.0, 1.0) == [("j2", "b")]
    assert isinstance(c.lookup("search", SEARCH, q("x"), D, 2.0), Hit)
    assert c.stats()["inflight"] == {"leaders": 0, "attached": 1, "released": 0}


def test_a_failed_leader_releases_its_followers_and_stores_nothing() -> None:
    c = ResultCache()
    k1, k2 = miss(c, q("x"), 0.0), miss(c, q("x"), 0.1)
    c.attach(k1, ("j1", "a"))
    c.attach(k2, ("j2", "b"))
    assert c.fail(k1) == [("j2", "b")]
    assert isinstance(c.lookup("search", SEARCH, q("x"), D, 2.0), Miss)
    assert c.attach(k2, ("j2", "b")) is None  # the released follower now leads


def test_evicted_entries_leave_the_similarity_index() -> None:
    c = ResultCache(CacheConfig(max_bytes=2500, entry_overhead_bytes=1000))
    for i, name in enumerate(("Tesla", "BYD", "NIO")):
        c.complete(miss(c, q(f"{name} EV sales in Europe"), float(i)), b"o", 1.0, float(i))
    assert len(c.store.entries) == 2 and len(c.index) == 2
    assert c.stats()["tiers"]["cold"]["evictions"] == 1


def test_stats_count_layers_and_hit_rate() -> None:
    c = ResultCache()
    c.complete(miss(c, q("JD delivery market share"), 0.0), b"jd", 1.0, 0.0)
    c.lookup("search", SEARCH, q("JD delivery market share"), D, 1.0)
    c.lookup("search", SEARCH, q("market share of JD delivery"), D, 1.0)
    s = c.stats()
    assert s["hits"] == 2 and s["misses"] == 1 and s["hit_rate"] == 2 / 3
    assert s["layers"]["exact"]["hits"] == 1 and s["layers"]["similarity"]["hits"] == 1
    assert s["entries"] == 1 and s["bytes"] > 0
