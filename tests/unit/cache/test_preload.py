"""The predictive preloader: learning, admission, proposals, back-off."""

from __future__ import annotations

import json

from deerflow_controller.cache import CacheConfig, HandlerTraits, Hit, Miss, ResultCache
from deerflow_controller.core.model import CachePolicy

T = HandlerTraits(cacheable=True)
D = CachePolicy.DEFAULT
PLAN = ["EV sales China", "EV battery prices", "EV charging stations"]


def p(text: str) -> bytes:
    return json.dumps({"query": text}).encode()


def run_job(c: ResultCache, job: str, now: float, plan: list[str] = PLAN) -> None:
    """One job's searches, computed at once (misses) and never preloaded."""
    for i, text in enumerate(plan):
        r = c.lookup("search", T, p(text), D, now + i, context=job)
        if isinstance(r, Miss):
            c.complete(r.key, text.encode(), 1.0, now + i)


def test_nothing_is_proposed_without_idle_slots_or_spare_quota() -> None:
    c = ResultCache(CacheConfig(fresh_ttl_s=10.0, default_ttl_s=10.0))
    run_job(c, "j1", 0.0)
    run_job(c, "j2", 100.0)
    c.lookup("search", T, p(PLAN[0]), D, 200.0, context="j3")
    assert c.speculate("j3", "search", 0, 10.0, 200.0) == []
    assert c.speculate("j3", "search", 4, 0.5, 200.0) == []
    assert len(c.speculate("j3", "search", 4, 10.0, 200.0)) == 2


def test_learned_follow_ups_are_proposed_only_when_not_fresh_in_the_cache() -> None:
    c = ResultCache(CacheConfig(default_ttl_s=50.0))
    run_job(c, "j1", 0.0)
    run_job(c, "j2", 100.0)  # all expired by then: misses, and the transitions seen twice
    c.lookup("search", T, p(PLAN[0]), D, 101.0, context="j3")
    assert c.speculate("j3", "search", 4, 10.0, 101.0) == []  # j2's answers are fresh
    c.lookup("search", T, p(PLAN[0]), D, 200.0, context="j4")
    specs = c.speculate("j4", "search", 4, 10.0, 200.0)
    assert [s.payload for s in specs] == [p(PLAN[1]), p(PLAN[2])]
    assert c.speculate("j4", "search", 4, 10.0, 200.0) == []  # already running


def test_a_transition_seen_once_is_not_worth_speculating() -> None:
    c = ResultCache(CacheConfig(default_ttl_s=50.0))
    run_job(c, "j1", 0.0)
    c.lookup("search", T, p(PLAN[0]), D, 200.0, context="j2")
    assert c.speculate("j2", "search", 4, 10.0, 200.0) == []


def test_a_preloaded_answer_is_served_as_the_preload_layer_and_counted_useful() -> None:
    c = ResultCache(CacheConfig(default_ttl_s=50.0))
    run_job(c, "j1", 0.0)
    run_job(c, "j2", 100.0)
    c.lookup("search", T, p(PLAN[0]), D, 200.0, context="j3")
    spec = c.speculate("j3", "search", 1, 10.0, 200.0)[0]
    c.complete(spec.key, b"pre", 1.0, 202.0, speculative=True)
    r = c.lookup("search", T, p(PLAN[1]), D, 205.0, context="j3")
    assert isinstance(r, Hit) and r.layer == "preload" and r.output == b"pre"
    st = c.stats()["preload"]
    assert st["useful"] == 1 and st["useful_ratio"] == 1.0 and st["inflight"] == 0


def test_the_budget_halves_when_preloads_go_unused_and_recovers_when_used() -> None:
    cfg = CacheConfig(
        default_ttl_s=10_000.0, preload_budget=8, preload_judge_every=4,
        preload_useful_window_s=60.0,
    )  # fmt: skip
    c = ResultCache(cfg)
    pre = c.preloader
    keys = []
    for i in range(8):
        r = c.lookup("search", T, p(f"q{i}"), D, 0.0)
        assert isinstance(r, Miss)
        keys.append(r.key)
    for k in keys[:4]:
        c.complete(k, b"x", 1.0, 0.0, speculative=True)
    c.sweep(61.0)  # four unused past the window: wasted
    assert pre.wasted == 4 and pre.budget == 4
    for k in keys[4:]:
        c.complete(k, b"x", 1.0, 100.0, speculative=True)
    for i in range(4, 8):
        c.lookup("search", T, p(f"q{i}"), D, 101.0)
    assert pre.useful == 4 and pre.budget == 5


def test_a_failed_speculation_frees_its_budget() -> None:
    c = ResultCache(CacheConfig(default_ttl_s=50.0, preload_budget=1))
    run_job(c, "j1", 0.0)
    run_job(c, "j2", 100.0)
    c.lookup("search", T, p(PLAN[0]), D, 200.0, context="j3")
    [spec] = c.speculate("j3", "search", 4, 10.0, 200.0)
    assert c.preloader.admit(4, 10.0) == 0
    c.fail(spec.key)
    assert c.preloader.admit(4, 10.0) == 1
