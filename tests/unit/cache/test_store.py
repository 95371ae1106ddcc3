"""The tiered store: TTL, tiers, GDSF eviction, byte bound (fake clock: plain floats)."""

from __future__ import annotations

from deerflow_controller.cache import CacheConfig, Entry, Origin, Tier, TieredStore


def entry(
    name: str, size: int = 100, cost: float = 1.0, ttl: float = 100.0, t: float = 0.0
) -> Entry:
    return Entry(
        digest=name.encode(), handler="h", scope=b"", text="", output=b"", cost_s=cost,
        created=t, expires_at=t + ttl, origin=Origin.TASK, size=size,
    )  # fmt: skip


def tier(s: TieredStore, name: bytes) -> Tier:
    return s.entries[name].tier


def test_entry_expires_after_its_ttl() -> None:
    s = TieredStore(CacheConfig())
    s.put(entry("a", ttl=10.0), 0.0)
    assert s.get(b"a", 9.9) is not None
    assert s.get(b"a", 10.0) is None
    assert s.tiers[Tier.WARM].stale == 1 and b"a" not in s.entries  # the first get promoted it


def test_sweep_drops_expired_entries_and_reports_them() -> None:
    dropped: list[bytes] = []
    s = TieredStore(CacheConfig(), on_drop=lambda e: dropped.append(e.digest))
    s.put(entry("a", ttl=10.0), 0.0)
    s.put(entry("b", ttl=50.0), 0.0)
    gone = s.sweep(20.0)
    assert [e.digest for e in gone] == [b"a"] == dropped
    assert s.total_bytes == 100 and s.tiers[Tier.COLD].expirations == 1


def test_accesses_promote_cold_to_warm_to_hot() -> None:
    s = TieredStore(CacheConfig(warm_min_hits=2, hot_min_hits=4))
    s.put(entry("a"), 0.0)
    assert tier(s, b"a") == Tier.COLD
    s.get(b"a", 1.0)
    assert tier(s, b"a") == Tier.WARM
    s.get(b"a", 2.0)
    s.get(b"a", 3.0)
    assert tier(s, b"a") == Tier.HOT
    assert s.tiers[Tier.HOT].promotions == 1 and s.tiers[Tier.WARM].promotions == 1
    assert s.tiers[Tier.HOT].entries == 1 and s.tiers[Tier.COLD].entries == 0


def test_idle_entries_are_demoted_one_tier_per_idle_period() -> None:
    s = TieredStore(CacheConfig(hot_min_hits=3, demote_idle_s=100.0))
    s.put(entry("a", ttl=10_000.0), 0.0)
    s.get(b"a", 1.0)
    s.get(b"a", 2.0)
    assert tier(s, b"a") == Tier.HOT
    s.sweep(50.0)
    assert tier(s, b"a") == Tier.HOT
    s.sweep(103.0)
    assert tier(s, b"a") == Tier.WARM and s.tiers[Tier.HOT].demotions == 1
    s.sweep(150.0)
    assert tier(s, b"a") == Tier.WARM
    s.sweep(204.0)
    assert tier(s, b"a") == Tier.COLD


def test_byte_bound_evicts_cheap_big_rarely_used_entries_first() -> None:
    s = TieredStore(CacheConfig(max_bytes=1000))
    s.put(entry("cheap_big", size=400, cost=0.1), 0.0)
    s.put(entry("dear_small", size=200, cost=5.0), 0.0)
    s.put(entry("popular", size=300, cost=0.5), 0.0)
    for t in range(5):
        s.get(b"popular", float(t))
    gone = s.put(entry("new", size=300, cost=1.0), 10.0)
    assert [e.digest for e in gone] == [b"cheap_big"]
    assert s.total_bytes == 800 <= 1000
    assert s.tiers[Tier.COLD].evictions == 1


def test_evictions_keep_the_store_under_its_bound_whatever_comes() -> None:
    s = TieredStore(CacheConfig(max_bytes=5000))
    for i in range(200):
        s.put(entry(f"e{i}", size=100 + i % 7 * 50, cost=(i % 5) / 2), float(i))
        assert s.total_bytes <= 5000
    assert sum(t.bytes for t in s.tiers.values()) == s.total_bytes
    assert sum(t.entries for t in s.tiers.values()) == len(s.entries)


def test_aged_out_entries_lose_to_new_ones_by_inflation() -> None:
    s = TieredStore(CacheConfig(max_bytes=300))
    s.put(entry("old", size=100, cost=1.0), 0.0)
    s.put(entry("mid", size=100, cost=1.0), 0.0)
    s.put(entry("x", size=100, cost=0.5), 0.0)
    s.put(entry("y", size=100, cost=1.0), 1.0)  # evicts x (lowest): inflation rises to x's
    assert b"x" not in s.entries
    s.put(entry("z", size=100, cost=0.6), 2.0)  # z's value includes the inflation: old goes
    assert b"z" in s.entries and len(s.entries) == 3
