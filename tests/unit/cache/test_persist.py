"""Persistence: a SQLite file survives a restart (a new ResultCache)."""

from __future__ import annotations

import json
from pathlib import Path

from deerflow_controller.cache import CacheConfig, CacheFile, HandlerTraits, Hit, Miss, ResultCache
from deerflow_controller.core.model import CachePolicy

T = HandlerTraits(cacheable=True, similarity_field="query", similarity_threshold=0.9)
D = CachePolicy.DEFAULT


def p(text: str) -> bytes:
    return json.dumps({"query": text}).encode()


def test_a_restarted_cache_serves_what_was_written(tmp_path: Path) -> None:
    cfg = CacheConfig(track_changes=True)
    c = ResultCache(cfg)
    for text, ttl_text in (("EV sales in China", ""), ("latest EV news", "")):
        r = c.lookup("search", T, p(text + ttl_text), D, 0.0)
        assert isinstance(r, Miss)
        c.complete(r.key, text.encode(), 2.0, 0.0)
    f = CacheFile(tmp_path / "cache.sqlite")
    # the cache's clock reads 0 when the wall clock reads 1000
    f.write(c.drain_changes(), now=0.0, wall_now=1000.0)
    assert c.drain_changes().puts == []
    f.close()

    # restart two hours later; the new process's clock reads 50 at wall 8200
    f2 = CacheFile(tmp_path / "cache.sqlite")
    records = f2.load(now=50.0, wall_now=8200.0)
    c2 = ResultCache(cfg)
    assert c2.restore(records, now=50.0) == 1  # the "latest" entry (1 h) expired
    r = c2.lookup("search", T, p("EV sales in China"), D, 51.0)
    assert isinstance(r, Hit) and r.output == b"EV sales in China" and r.age_s == 7201.0
    sim = c2.lookup("search", T, p("China EV sales"), D, 51.0)
    assert isinstance(sim, Hit) and sim.layer == "similarity"
    f2.close()


def test_dropped_entries_are_deleted_from_the_file(tmp_path: Path) -> None:
    cfg = CacheConfig(track_changes=True, default_ttl_s=10.0)
    c = ResultCache(cfg)
    r = c.lookup("search", T, p("x"), D, 0.0)
    assert isinstance(r, Miss)
    c.complete(r.key, b"x", 1.0, 0.0)
    f = CacheFile(tmp_path / "c.sqlite")
    f.write(c.drain_changes(), 0.0, 0.0)
    c.sweep(20.0)
    batch = c.drain_changes()
    assert batch.deletes == [r.key.digest]
    f.write(batch, 20.0, 20.0)
    assert f.load(0.0, 0.0) == []
    f.close()
