"""``ResultCache``: the one object the scheduler talks to. Pure: no I/O, no clock reads.

Lookup order for a request: policy and handler traits (a dict-free early return for handlers
that are not cacheable), size bound, canonical key, the exact layer, then (for handlers that
declared a similarity field and threshold) the similarity layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deerflow_controller.cache.config import CacheConfig, HandlerTraits
from deerflow_controller.cache.embedding import NgramEmbedder, Vector
from deerflow_controller.cache.inflight import InflightTable, TaskRef
from deerflow_controller.cache.keys import RequestKey, SkipReason, canonicalise
from deerflow_controller.cache.preload import Preloader, Speculation
from deerflow_controller.cache.similarity import SimilarityIndex
from deerflow_controller.cache.store import Entry, Origin, Tier, TieredStore
from deerflow_controller.cache.synonyms import SynonymLearner, fingerprint, overlap
from deerflow_controller.cache.text import Words, is_time_sensitive, words
from deerflow_controller.core.model import CachePolicy


@dataclass(frozen=True, slots=True)
class Hit:
    """Serve ``output`` as the task's result; do not run it."""

    output: bytes
    layer: str
    """``exact``, ``similarity`` or ``preload`` (an entry a speculative task stored): the
    value of ``Event.cache_layer``."""
    score: float
    """Cosine similarity (1.0 on the exact layer)."""
    age_s: float
    key: RequestKey
    """The request's own key."""
    source: bytes
    """Digest of the entry served (differs from ``key.digest`` on a similarity hit)."""

    @property
    def reason(self) -> str:
        """The sentence for ``Event.detail``."""
        if self.layer == "similarity":
            return f"cache hit (similarity {self.score:.2f}, {self.age_s:.0f} s old)"
        return f"cache hit ({self.layer}, {self.age_s:.0f} s old)"


@dataclass(frozen=True, slots=True)
class Miss:
    """Run the task (after ``attach``); report it with ``complete`` or ``fail``."""

    key: RequestKey


@dataclass(frozen=True, slots=True)
class Skip:
    """Run the task as if there were no cache; nothing to report afterwards."""

    reason: SkipReason


Lookup = Hit | Miss | Skip

_SKIPS = {r: Skip(r) for r in SkipReason}


def default_skip(traits: HandlerTraits) -> SkipReason | None:
    """Why a task of a handler with these traits is never looked up under the default cache
    policy, whatever its payload; None when it is looked up."""
    if not traits.cacheable:
        return SkipReason.NOT_CACHEABLE
    if traits.nondeterministic:
        return SkipReason.NONDETERMINISTIC
    return None


@dataclass(frozen=True, slots=True)
class PersistedEntry:
    """One entry as the persistence file holds it (times on the cache's clock)."""

    digest: bytes
    handler: str
    scope: bytes
    text: str
    output: bytes
    cost_s: float
    created: float
    expires_at: float
    origin: int
    freq: float
    similar: bool


@dataclass(slots=True)
class ChangeBatch:
    puts: list[PersistedEntry] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)


class ResultCache:
    """Exact and similarity result cache with tiers, in-flight dedup and a preloader."""

    def __init__(self, config: CacheConfig | None = None) -> None:
        self.config = config or CacheConfig()
        self.store = TieredStore(self.config, on_drop=self._dropped)
        self.index = SimilarityIndex(
            self.config.similarity_dim,
            self.config.similarity_candidates,
            guard=self.config.entity_guard,
        )
        self.embedder = NgramEmbedder(self.config.similarity_dim)
        self.synonyms = SynonymLearner(
            self.config.synonym_min_overlap, self.config.synonym_min_evidence
        )
        self.inflight = InflightTable()
        self.preloader = Preloader(self.config)
        self.skips: dict[SkipReason, int] = dict.fromkeys(SkipReason, 0)
        self.hits: dict[str, int] = {"exact": 0, "similarity": 0, "preload": 0}
        self.misses = 0
        self.refreshes = 0
        self.oversized_outputs = 0
        self._changes: dict[bytes, PersistedEntry | None] = {}

    # ------------------------------------------------------------------ lookup

    def lookup(
        self,
        handler: str,
        traits: HandlerTraits,
        payload: bytes,
        policy: CachePolicy,
        now: float,
        context: str = "",
        partition: str = "",
    ) -> Lookup:
        """Whether the task's answer is cached. O(1) plus the payload's size on the exact
        layer; the similarity layer scores at most ``similarity_candidates`` rows.

        ``context`` (the job id) lets the preloader learn which request follows which; pass ""
        for tasks that should not teach it (speculative ones). ``partition`` (the task's
        tenant) keeps tenants' answers apart (see :func:`canonicalise`). Never raises on bad
        input: a payload that cannot be keyed is a ``Skip``."""
        if policy == CachePolicy.DEFAULT:
            reason = default_skip(traits)
            if reason is not None:
                return self._skip(reason)
        elif policy == CachePolicy.OFF:
            return self._skip(SkipReason.POLICY_OFF)
        if len(payload) > self.config.max_payload_bytes:
            return self._skip(SkipReason.TOO_LARGE)
        try:
            canon = canonicalise(handler, payload, traits.similarity_field, partition)
        except ValueError:
            return self._skip(SkipReason.UNHASHABLE)
        key = RequestKey(
            handler,
            canon.digest,
            canon.scope,
            canon.text,
            self._ttl(canon.text, traits),
            traits.similarity_threshold if canon.has_field else 0.0,
            refresh=policy == CachePolicy.REFRESH,
        )
        if context and self.config.preload:
            self.preloader.observe(context, key, payload)
        if key.refresh:
            self.refreshes += 1
            self.misses += 1
            return Miss(key)
        e = self.store.entries.get(key.digest)
        if e is not None and self._fresh_for(e, key, now):
            self.store.touch(e, now)
            return self._hit(e, key, "exact", 1.0, now)
        if e is not None:
            self.store.get(key.digest, now)  # drops it if expired, counting it stale
        if key.threshold > 0.0:
            w = self._words(key.text)
            key.words = w
            key.vector = self.embedder.embed(w.content)
            learn = self.config.learn_synonyms
            floor = min(key.threshold, self.config.learn_floor) if learn else key.threshold
            nb = self.index.nearest(key.scope, w, key.vector, floor)
            if nb is not None and nb.score >= key.threshold:
                e = self.store.entries.get(nb.digest)
                if e is not None and self._fresh_for(e, key, now):
                    self.store.touch(e, now)
                    return self._hit(e, key, "similarity", nb.score, now)
            elif nb is not None:
                key.near = nb.digest
        self.misses += 1
        return Miss(key)

    # ------------------------------------------------------------------ in-flight dedup

    def attach(self, key: RequestKey, task: TaskRef) -> TaskRef | None:
        """Call after a ``Miss``, before running the task: None means 'you lead, run it'; a
        TaskRef means an identical task is running, so hold this one until that leader's
        ``complete`` (answer it) or ``fail`` (release it)."""
        return self.inflight.attach(key.digest, task)

    def detach(self, key: RequestKey, task: TaskRef) -> None:
        """A waiting follower was cancelled."""
        self.inflight.detach(key.digest, task)

    def complete(
        self,
        key: RequestKey,
        output: bytes,
        cost_s: float,
        now: float,
        speculative: bool = False,
    ) -> list[TaskRef]:
        """The leader (or a speculative task) succeeded: store the output (cost_s = seconds
        the attempt took, the recompute cost eviction weighs) and return the followers to
        answer with the same output under their own ids."""
        followers = self.inflight.complete(key.digest)
        if speculative:
            self.preloader.stored_result(key.digest, now)
        if len(output) > self.config.max_output_bytes:
            self.oversized_outputs += 1
            return followers
        if key.threshold > 0.0 and key.words is None:
            key.words = self._words(key.text)
            key.vector = self.embedder.embed(key.words.content)
        similar = key.words is not None and key.vector is not None
        fp = fingerprint(output) if similar and self.config.learn_synonyms else ()
        if fp and key.near is not None and key.words is not None:
            self._learn(key.words, key.near, fp)
        size = len(output) + self.config.entry_overhead_bytes
        e = Entry(
            digest=key.digest,
            handler=key.handler,
            scope=key.scope,
            text=key.text if similar else "",
            output=output,
            cost_s=cost_s,
            created=now,
            expires_at=now + key.ttl_s,
            origin=Origin.PRELOAD if speculative else Origin.TASK,
            size=size,
            similar=similar,
            fingerprint=fp,
        )
        self._put(e, now, vector=key.vector)
        return followers

    def fail(self, key: RequestKey) -> list[TaskRef]:
        """The leader failed for good or was cancelled (or a speculative task failed): nothing
        is stored; returns the followers, which the scheduler runs as new requests (each calls
        ``attach`` again; the first becomes the leader)."""
        self.preloader.failed(key.digest)
        return self.inflight.fail(key.digest)

    # ------------------------------------------------------------------ preloading

    def speculate(
        self, context: str, handler: str, idle_slots: int, spare_quota: float, now: float
    ) -> list[Speculation]:
        """Speculative follow-ups of ``context``'s last ``handler`` request worth running now.

        Call it when the scheduler has ``idle_slots`` slots free for the handler and
        ``spare_quota`` requests of room on the request's rate keys (the minimum over them);
        it returns nothing unless both are positive, and never more than the back-off budget.
        Submit each as a lowest-priority task with ``CachePolicy.REFRESH`` semantics, call
        ``attach(s.key, ref)`` so real requests arriving meanwhile follow it, and report with
        ``complete(s.key, output, cost_s, now, speculative=True)`` or ``fail(s.key)``."""
        if not self.config.preload:
            return []
        self.preloader.judge(now)
        allowed = self.preloader.admit(idle_slots, spare_quota)
        if allowed <= 0:
            return []
        return self.preloader.propose(
            context,
            handler,
            allowed,
            lambda d: self.store.peek_fresh(d, now) or self.inflight.leader(d) is not None,
        )

    # ------------------------------------------------------------------ upkeep

    def sweep(self, now: float, budget: int = 10_000) -> int:
        """Expire, demote and judge preloads; at most ``budget`` steps. Call from the tick."""
        gone = self.store.sweep(now, budget)
        self.preloader.judge(now)
        return len(gone)

    def stats(self) -> dict[str, Any]:
        """Counters for the dashboard, metrics and ``deerflow stats``."""
        hits = sum(self.hits.values())
        lookups = hits + self.misses

        def rate(n: int) -> float:
            return n / lookups if lookups else 0.0

        p = self.preloader
        return {
            "lookups": lookups,
            "hits": hits,
            "misses": self.misses,
            "hit_rate": rate(hits),
            "layers": {k: {"hits": v, "hit_rate": rate(v)} for k, v in self.hits.items()},
            "skips": {r.value: n for r, n in self.skips.items()},
            "refreshes": self.refreshes,
            "oversized_outputs": self.oversized_outputs,
            "entries": len(self.store.entries),
            "bytes": self.store.total_bytes,
            "similarity_rows": len(self.index),
            "synonyms": {
                "merges": self.synonyms.merges,
                "noise_words": self.synonyms.noise,
                "observed": self.synonyms.observed,
            },
            "tiers": {
                t.name.lower(): {
                    "entries": s.entries,
                    "bytes": s.bytes,
                    "hits": s.hits,
                    "stale": s.stale,
                    "evictions": s.evictions,
                    "expirations": s.expirations,
                    "promotions": s.promotions,
                    "demotions": s.demotions,
                }
                for t, s in self.store.tiers.items()
            },
            "inflight": {
                "leaders": len(self.inflight),
                "attached": self.inflight.attached,
                "released": self.inflight.released,
            },
            "preload": {
                "budget": p.budget,
                "inflight": p.inflight,
                "proposed": p.proposed,
                "stored": p.stored,
                "useful": p.useful,
                "wasted": p.wasted,
                "useful_ratio": p.useful_ratio,
            },
        }

    # ------------------------------------------------------------------ persistence

    def drain_changes(self) -> ChangeBatch:
        """Entries stored and dropped since the last call (only with ``track_changes``): the
        shell writes them to the persistence file off the hot path, every few seconds."""
        batch = ChangeBatch()
        for digest, rec in self._changes.items():
            if rec is None:
                batch.deletes.append(digest)
            else:
                batch.puts.append(rec)
        self._changes = {}
        return batch

    def restore(self, records: list[PersistedEntry], now: float) -> int:
        """Reload entries from a persistence file at start-up; returns how many were fresh."""
        n = 0
        for r in records:
            if r.expires_at <= now:
                continue
            e = Entry(
                digest=r.digest,
                handler=r.handler,
                scope=r.scope,
                text=r.text,
                output=r.output,
                cost_s=r.cost_s,
                created=r.created,
                expires_at=r.expires_at,
                origin=Origin(r.origin),
                size=len(r.output) + self.config.entry_overhead_bytes,
                freq=r.freq,
                similar=r.similar,
            )
            self._put(e, now, track=False)
            n += 1
        return n

    # ------------------------------------------------------------------ internals

    def _skip(self, reason: SkipReason) -> Skip:
        self.skips[reason] += 1
        return _SKIPS[reason]

    def count_skips(self, reason: SkipReason, n: int) -> None:
        """Count ``n`` lookups skipped for ``reason`` without making them (tasks whose skip
        :func:`default_skip` decides from their handler alone)."""
        self.skips[reason] += n

    def _ttl(self, text: str, traits: HandlerTraits) -> float:
        if traits.cache_ttl_s > 0:
            return traits.cache_ttl_s
        c = self.config
        if is_time_sensitive(text, c.fresh_words, c.fresh_years):
            return c.fresh_ttl_s
        return c.default_ttl_s

    @staticmethod
    def _fresh_for(e: Entry, key: RequestKey, now: float) -> bool:
        # The asker's freshness rule applies too: "latest X" is not served a 5-hour-old "X".
        return e.expires_at > now and now - e.created < key.ttl_s

    def _hit(self, e: Entry, key: RequestKey, layer: str, score: float, now: float) -> Hit:
        if e.origin is Origin.PRELOAD:
            layer = "preload"
            self.preloader.hit(e.digest)
        self.hits[layer] += 1
        return Hit(e.output, layer, score, now - e.created, key, e.digest)

    def _put(self, e: Entry, now: float, track: bool = True, vector: Vector | None = None) -> None:
        self.store.put(e, now)
        if e.digest not in self.store.entries:
            return
        if e.similar:
            w = self._words(e.text)
            v = vector if vector is not None else self.embedder.embed(w.content)
            self.index.add(e.digest, e.scope, w, v)
        if track and self.config.track_changes:
            self._changes[e.digest] = PersistedEntry(
                e.digest, e.handler, e.scope, e.text, e.output, e.cost_s, e.created,
                e.expires_at, int(e.origin), e.freq, e.similar,
            )  # fmt: skip

    def _words(self, text: str) -> Words:
        return self.synonyms.canonical(words(text))

    def _learn(self, mine: Words, near: bytes, fp: tuple[int, ...]) -> None:
        other = self.store.entries.get(near)
        if other is None or not other.fingerprint:
            return
        changed = self.synonyms.observe(
            mine, self._words(other.text), overlap(fp, other.fingerprint)
        )
        for word in changed:
            self.index.reembed(word, self.synonyms.canonical, self.embedder.embed)

    def _dropped(self, e: Entry) -> None:
        if e.similar:
            self.index.remove(e.digest)
        if e.origin is Origin.PRELOAD:
            self.preloader.dropped(e.digest)
        if self.config.track_changes:
            self._changes[e.digest] = None


__all__ = ["ChangeBatch", "Hit", "Lookup", "Miss", "PersistedEntry", "ResultCache", "Skip", "Tier"]
