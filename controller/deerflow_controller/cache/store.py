"""The byte-bounded entry store: tiers by access frequency, TTLs, cost-aware eviction.

Eviction is GreedyDual-Size-Frequency (Cherkasova 1998): an entry's value is

    H = L + frequency x cost / size

where ``cost`` is the seconds the answer took to compute, ``size`` its bytes, and ``L`` the
value of the last entry evicted (so entries that stop being used age out). The lowest H goes
first: cheap, big, rarely used answers before expensive, small, popular ones. A lazy heap keeps
this O(log n) per change.

Tiers name an entry's access frequency: cold (stored, not reused), warm (``warm_min_hits``
accesses), hot (``hot_min_hits``). An access promotes; ``sweep`` demotes entries idle for
``demote_idle_s`` one tier (their frequency drops to the tier's floor, so GDSF values follow).
Each tier keeps its entries in last-access order, so demotion only looks at the idle front.

Pure: every method takes ``now`` (seconds on the caller's clock)."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from deerflow_controller.cache.config import CacheConfig


class Tier(IntEnum):
    COLD = 0
    WARM = 1
    HOT = 2


class Origin(IntEnum):
    """Who computed an entry: a task someone asked for, or the preloader's speculation."""

    TASK = 0
    PRELOAD = 1


@dataclass(slots=True)
class Entry:
    digest: bytes
    handler: str
    scope: bytes
    text: str
    output: bytes
    cost_s: float
    created: float
    expires_at: float
    origin: Origin
    size: int
    freq: float = 1.0
    last_access: float = 0.0
    tier: Tier = Tier.COLD
    priority: float = 0.0
    heap_seq: int = 0
    hits: int = 0
    similar: bool = False
    """Also indexed in the similarity layer."""
    fingerprint: tuple[int, ...] = ()
    """The answer's fingerprint (similar entries, when synonyms are learned)."""


@dataclass(slots=True)
class TierStats:
    hits: int = 0
    stale: int = 0
    """Lookups that found an entry of this tier past its freshness (a miss)."""
    evictions: int = 0
    expirations: int = 0
    promotions: int = 0
    """Entries that entered this tier from below."""
    demotions: int = 0
    """Entries that left this tier downwards."""
    entries: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Clocks:
    inflation: float = 0.0
    seq: int = 0


@dataclass(slots=True)
class TieredStore:
    """Entries by digest. Callers own the similarity index: ``put`` and ``sweep`` return the
    entries that left so it can forget them."""

    config: CacheConfig
    entries: dict[bytes, Entry] = field(default_factory=dict)
    tiers: dict[Tier, TierStats] = field(default_factory=lambda: {t: TierStats() for t in Tier})
    total_bytes: int = 0
    _lru: dict[Tier, OrderedDict[bytes, None]] = field(
        default_factory=lambda: {t: OrderedDict() for t in Tier}
    )
    _heap: list[tuple[float, int, bytes]] = field(default_factory=list)
    _expiry: list[tuple[float, bytes]] = field(default_factory=list)
    _clock: _Clocks = field(default_factory=_Clocks)
    on_drop: Callable[[Entry], None] | None = None
    """Told of every entry that leaves (expired, stale, evicted, removed), not of one replaced
    by ``put``: the similarity index and the preloader forget it."""

    # ------------------------------------------------------------------ lookups

    def get(self, digest: bytes, now: float) -> Entry | None:
        """The fresh entry for ``digest``, counted as a hit in its tier (and promoted); None if
        absent or stale (a stale entry is dropped and counted)."""
        e = self.entries.get(digest)
        if e is None:
            return None
        if e.expires_at <= now:
            self.tiers[e.tier].stale += 1
            self._drop(e)
            self.tiers[e.tier].expirations += 1
            return None
        self.touch(e, now)
        return e

    def peek_fresh(self, digest: bytes, now: float) -> bool:
        e = self.entries.get(digest)
        return e is not None and e.expires_at > now

    def touch(self, e: Entry, now: float) -> None:
        """Count a hit on ``e``: frequency +1, last access now, promote, re-value."""
        self.tiers[e.tier].hits += 1
        e.hits += 1
        e.freq += 1.0
        e.last_access = now
        target = self._tier_for(e.freq)
        if target > e.tier:
            self._move(e, target)
            self.tiers[target].promotions += 1
        else:
            self._lru[e.tier].move_to_end(e.digest)
        self._revalue(e)

    # ------------------------------------------------------------------ changes

    def put(self, e: Entry, now: float) -> list[Entry]:
        """Store ``e``, replacing the entry with its digest (not reported); returns the entries
        evicted to stay under ``max_bytes``, which may include ``e`` if it is the least valuable."""
        old = self.entries.get(e.digest)
        gone: list[Entry] = []
        if old is not None:
            self._drop(old, notify=False)
        e.last_access = now
        e.tier = self._tier_for(e.freq)
        self.entries[e.digest] = e
        self._lru[e.tier][e.digest] = None
        st = self.tiers[e.tier]
        st.entries += 1
        st.bytes += e.size
        self.total_bytes += e.size
        self._revalue(e)
        heapq.heappush(self._expiry, (e.expires_at, e.digest))
        while self.total_bytes > self.config.max_bytes and self._heap:
            victim = self._pop_lowest()
            if victim is None:
                break
            self._clock.inflation = victim.priority
            self.tiers[victim.tier].evictions += 1
            self._drop(victim)
            gone.append(victim)
        return gone

    def remove(self, digest: bytes) -> Entry | None:
        e = self.entries.get(digest)
        if e is not None:
            self._drop(e)
        return e

    def sweep(self, now: float, budget: int = 10_000) -> list[Entry]:
        """Drop expired entries and demote idle ones, doing at most ``budget`` steps; returns
        the dropped entries. Call it from the controller's tick (every second or so)."""
        gone: list[Entry] = []
        steps = 0
        while self._expiry and self._expiry[0][0] <= now and steps < budget:
            exp, digest = heapq.heappop(self._expiry)
            steps += 1
            e = self.entries.get(digest)
            if e is not None and e.expires_at == exp:
                self.tiers[e.tier].expirations += 1
                self._drop(e)
                gone.append(e)
        idle_before = now - self.config.demote_idle_s
        for tier in (Tier.WARM, Tier.HOT):  # warm first: a demoted hot entry waits a sweep
            lru = self._lru[tier]
            while lru and steps < budget:
                e = self.entries[next(iter(lru))]
                if e.last_access > idle_before:
                    break
                steps += 1
                below = Tier(tier - 1)
                e.freq = float(self._floor(below))
                self._move(e, below)
                self.tiers[tier].demotions += 1
                e.last_access = now  # a fresh idle period in the lower tier
                self._lru[below].move_to_end(e.digest)
                self._revalue(e)
        if len(self._heap) > 4 * len(self.entries) + 1024:
            self._heap = [(e.priority, e.heap_seq, e.digest) for e in self.entries.values()]
            heapq.heapify(self._heap)
        if len(self._expiry) > 4 * len(self.entries) + 1024:
            self._expiry = [(e.expires_at, e.digest) for e in self.entries.values()]
            heapq.heapify(self._expiry)
        return gone

    # ------------------------------------------------------------------ internals

    def _floor(self, tier: Tier) -> int:
        if tier is Tier.HOT:
            return self.config.hot_min_hits
        if tier is Tier.WARM:
            return self.config.warm_min_hits
        return 1

    def _tier_for(self, freq: float) -> Tier:
        if freq >= self.config.hot_min_hits:
            return Tier.HOT
        if freq >= self.config.warm_min_hits:
            return Tier.WARM
        return Tier.COLD

    def _move(self, e: Entry, target: Tier) -> None:
        del self._lru[e.tier][e.digest]
        src, dst = self.tiers[e.tier], self.tiers[target]
        src.entries -= 1
        src.bytes -= e.size
        dst.entries += 1
        dst.bytes += e.size
        e.tier = target
        self._lru[target][e.digest] = None

    def _revalue(self, e: Entry) -> None:
        cost = max(e.cost_s, self.config.min_cost_s)
        e.priority = self._clock.inflation + e.freq * cost / max(e.size, 1)
        self._clock.seq += 1
        e.heap_seq = self._clock.seq
        heapq.heappush(self._heap, (e.priority, e.heap_seq, e.digest))

    def _pop_lowest(self) -> Entry | None:
        while self._heap:
            _, seq, digest = heapq.heappop(self._heap)
            e = self.entries.get(digest)
            if e is not None and e.heap_seq == seq:
                return e
        return None

    def _drop(self, e: Entry, notify: bool = True) -> None:
        del self.entries[e.digest]
        del self._lru[e.tier][e.digest]
        st = self.tiers[e.tier]
        st.entries -= 1
        st.bytes -= e.size
        self.total_bytes -= e.size
        if notify and self.on_drop is not None:
            self.on_drop(e)
