"""Synonyms learned from coinciding answers."""

from __future__ import annotations

import json

from deerflow_controller.cache import CacheConfig, HandlerTraits, Hit, Miss, ResultCache
from deerflow_controller.cache.synonyms import SynonymLearner, fingerprint, overlap
from deerflow_controller.cache.text import words
from deerflow_controller.core.model import CachePolicy

T = HandlerTraits(cacheable=True, similarity_field="query", similarity_threshold=0.9)
D = CachePolicy.DEFAULT


def results(*urls: str) -> bytes:
    return json.dumps({"results": [{"url": f"https://x.com/{u}"} for u in urls]}).encode()


def test_fingerprints_compare_result_urls_else_lines() -> None:
    a, b = fingerprint(results("1", "2", "3")), fingerprint(results("2", "3", "4"))
    assert overlap(a, b) == 2 / 4
    assert overlap(fingerprint(b"one\ntwo\n"), fingerprint(b"two\nthree")) == 1 / 3
    assert overlap(fingerprint(b""), a) == 0.0


def test_a_word_pair_is_merged_after_enough_evidence_only() -> None:
    s = SynonymLearner(min_overlap=0.5, min_evidence=2)
    a, b = words("JD revenue in China"), words("JD sales in China")
    assert s.observe(a, b, 0.9) == []
    assert s.canon("sale") == "sale"
    assert s.observe(words("BYD revenue in Europe"), words("BYD sales in Europe"), 0.9) == ["sale"]
    assert s.canonical(words("Tesla sales")).content == ("tesla", "revenue")


def test_answers_that_differ_teach_nothing() -> None:
    s = SynonymLearner(min_overlap=0.5, min_evidence=1)
    assert s.observe(words("JD revenue"), words("JD pricing"), 0.1) == []
    assert s.canon("pricing") == "pricing"


def test_entities_are_never_merged() -> None:
    s = SynonymLearner(min_overlap=0.5, min_evidence=1)
    assert s.observe(words("JD delivery share"), words("Meituan delivery share"), 1.0) == []
    assert s.canon("meituan") == "meituan"


def test_fillers_are_dropped_and_phrases_replaced() -> None:
    s = SynonymLearner(min_overlap=0.5, min_evidence=1)
    s.observe(words("quick question: JD revenue"), words("JD revenue"), 0.9)
    s.observe(words("quick question: BYD revenue"), words("BYD revenue"), 0.9)
    assert "quick" not in s.canonical(words("quick EV sales")).content
    s.observe(words("JD capital raised"), words("JD funding"), 0.9)
    assert set(s.canonical(words("NIO capital raised")).content) == {"nio", "fund"}


def test_the_cache_serves_a_synonym_once_answers_have_shown_it() -> None:
    c = ResultCache(CacheConfig(synonym_min_evidence=2))

    def run(text: str, answer: bytes, now: float) -> object:
        r = c.lookup("search", T, json.dumps({"query": text}).encode(), D, now)
        if isinstance(r, Miss):
            c.complete(r.key, answer, 1.0, now)
        return r

    for i, (entity, region) in enumerate((("JD", "China"), ("BYD", "Europe"))):
        run(f"{entity} revenue in {region}", results(entity, "a", "b"), float(i))
        assert isinstance(
            run(f"{entity} sales in {region}", results(entity, "a", "c"), 10.0 + i), Miss
        )
    assert c.stats()["synonyms"]["merges"] == 1
    run("Tesla revenue in Japan", results("t1"), 20.0)
    hit = run("Tesla sales in Japan", results("t2"), 21.0)
    assert isinstance(hit, Hit) and hit.layer == "similarity"
    assert isinstance(run("Tesla pricing in Japan", results("t3"), 22.0), Miss)
