"""Synonyms learned from answers that coincide: how a cache with no language model comes to
know that "revenue" and "sales" ask the same thing.

When a request misses, the similarity layer remembers its best neighbour below the threshold
(same options, entity guard passed). When the request's answer arrives it is compared with the
neighbour's: search results that mostly coincide (Jaccard of their URLs, or of their lines, at
least ``min_overlap``) mean the two requests asked the same question. If their words then differ
in exactly one unmarked word each, those two words are recorded as evidence of a synonym pair;
after ``min_evidence`` independent sightings the words are merged (union-find), and from then on
both embed as one. Likewise a word that one of two same-answer requests has and the other lacks
(a filler such as "quick question") is evidence that the word changes nothing; after
``min_evidence + 1`` sightings it is dropped before embedding. Differences of two words
("capital raised" / "funding", "customer count" / "user numbers") become phrase rules the same
way: a text holding all of a phrase's words has them replaced by one token. Entity, number and
time words (the guard's marked tokens) are never merged or dropped, so the guard keeps separating
templated siblings.

This is result-overlap query clustering, the signal search engines use to learn query
equivalence; it needs no model download and only learns what the cache's own traffic shows."""

from __future__ import annotations

import contextlib
import json
import zlib
from typing import Any

from deerflow_controller.cache.text import Words


def fingerprint(output: bytes, limit: int = 64) -> tuple[int, ...]:
    """What an answer is made of, for comparing answers: the URLs in a JSON answer (search
    results), else its non-empty lines; hashed, sorted, at most ``limit``."""
    found: list[str] = []
    with contextlib.suppress(ValueError, RecursionError):
        _urls(json.loads(output), found, limit)
    if not found:
        found = [ln.strip() for ln in output.decode("utf-8", "ignore").splitlines() if ln.strip()]
    return tuple(sorted({zlib.crc32(s.encode()) for s in found[:limit]}))


def _urls(value: Any, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _urls(v, out, limit)
    elif isinstance(value, list):
        for v in value:
            _urls(v, out, limit)


def overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Jaccard similarity of two fingerprints (0 if either is empty)."""
    if not a or not b:
        return 0.0
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb)


class SynonymLearner:
    __slots__ = (
        "_evidence",
        "_parent",
        "_phrase_evidence",
        "_phrases",
        "merges",
        "min_evidence",
        "min_overlap",
        "noise",
        "observed",
    )

    def __init__(self, min_overlap: float = 0.4, min_evidence: int = 2) -> None:
        self.min_overlap = min_overlap
        self.min_evidence = min_evidence
        self._parent: dict[str, str] = {}
        self._evidence: dict[tuple[str, str], int] = {}
        self._phrases: dict[frozenset[str], str] = {}
        self._phrase_evidence: dict[tuple[frozenset[str], frozenset[str]], int] = {}
        self.merges = 0
        self.noise = 0
        self.observed = 0

    def canon(self, word: str) -> str:
        parent = self._parent
        root = word
        while root in parent:
            root = parent[root]
        while word != root:  # path compression
            nxt = parent[word]
            parent[word] = root
            word = nxt
        return root

    def canonical(self, w: Words) -> Words:
        """``w`` with every word replaced by its class's representative."""
        if not self._parent and not self._phrases:
            return w
        content = [c for c in dict.fromkeys(self.canon(t) for t in w.content) if c]
        if self._phrases:
            have = set(content)
            for phrase, rep in self._phrases.items():
                if phrase <= have:
                    have -= phrase
                    have.add(rep)
                    content = [c for c in content if c not in phrase]
                    content.append(rep)
        return Words(tuple(dict.fromkeys(content)), w.marked)

    def observe(self, a: Words, b: Words, answer_overlap: float) -> list[str]:
        """Two requests' answers overlapped this much (``a`` and ``b`` already canonical);
        returns the words whose rows must be re-embedded if this sighting completed a rule."""
        if answer_overlap < self.min_overlap:
            return []
        self.observed += 1
        # Re-canonicalise: rules learned since the requests were looked up apply too (and a
        # stale word must never be merged into its own class: that would make a cycle).
        sa = {c for t in a.content if (c := self.canon(t))}
        sb = {c for t in b.content if (c := self.canon(t))}
        da, db = sa - sb, sb - sa
        marked = a.marked | b.marked
        if da & marked or db & marked or not (da or db):
            return []
        if bool(da) != bool(db):
            return self._noise(da | db) if len(da | db) <= 2 else []
        if len(da) > 2 or len(db) > 2:
            return []
        if len(da) > 1 or len(db) > 1:
            return self._phrase(frozenset(da), frozenset(db))
        (x,), (y,) = da, db
        pair = (x, y) if x < y else (y, x)
        n = self._evidence.get(pair, 0) + 1
        self._evidence[pair] = n
        if n < self.min_evidence:
            return []
        del self._evidence[pair]
        keep, gone = pair
        if self.canon(keep) == self.canon(gone):
            return []
        self._parent[self.canon(gone)] = self.canon(keep)
        self.merges += 1
        return [gone]

    def _noise(self, extra: set[str]) -> list[str]:
        dropped: list[str] = []
        for t in sorted(extra):
            pair = (t, "")
            n = self._evidence.get(pair, 0) + 1
            self._evidence[pair] = n
            if n >= self.min_evidence + 1:
                del self._evidence[pair]
                self._parent[t] = ""
                self.noise += 1
                dropped.append(t)
        return dropped

    def _phrase(self, x: frozenset[str], y: frozenset[str]) -> list[str]:
        key = (x, y) if sorted(x) < sorted(y) else (y, x)
        n = self._phrase_evidence.get(key, 0) + 1
        self._phrase_evidence[key] = n
        if n < self.min_evidence:
            return []
        del self._phrase_evidence[key]
        single = [p for p in key if len(p) == 1]
        rep = next(iter(single[0])) if single else "+".join(sorted(key[0]))
        for p in key:
            if len(p) > 1:
                self._phrases[p] = rep
        self.merges += 1
        return sorted(x | y)
