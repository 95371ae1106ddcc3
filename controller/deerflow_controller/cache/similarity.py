"""The similarity layer's nearest-neighbour index, fast at 100,000 entries.

Rows are unit embeddings in one float32 matrix (float16 would halve it, but numpy converts
float16 rows far slower than it multiplies float32 ones: measured, it doubled the p99). A
lookup does not scan the matrix: candidates come from posting lists keyed by (scope, word),
and only the most recent ``max_candidates`` rows of the query's most selective words are
scored with one small matmul. If the query has marked tokens (the entity guard's), a match
must contain all of them, so the rarest marked token's posting list holds every possible
match; otherwise the three rarest content words' lists are unioned. Cost is therefore bounded
by ``max_candidates`` whatever the index size.

Removal frees the row for reuse and leaves posting lists alone (a stale posting is filtered by
the row's scope and alive flag at lookup, and the lists are rebuilt when stale ones dominate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deerflow_controller.cache.embedding import Vector
from deerflow_controller.cache.text import Words, guard_allows


@dataclass(frozen=True, slots=True)
class Neighbour:
    digest: bytes
    score: float


class SimilarityIndex:
    __slots__ = (
        "_alive",
        "_content",
        "_digest",
        "_free",
        "_live",
        "_marked",
        "_posted",
        "_postings",
        "_row_of",
        "_scope",
        "_vecs",
        "dim",
        "guard",
        "max_candidates",
    )

    def __init__(
        self, dim: int, max_candidates: int = 256, capacity: int = 1024, guard: bool = True
    ) -> None:
        self.dim = dim
        self.guard = guard
        """The entity guard (off only to measure what it is worth)."""
        self.max_candidates = max_candidates
        self._vecs: npt.NDArray[np.float32] = np.zeros((capacity, dim), dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._digest: list[bytes] = []
        self._scope: list[bytes] = []
        self._content: list[frozenset[str]] = []
        self._marked: list[frozenset[str]] = []
        self._row_of: dict[bytes, int] = {}
        self._free: list[int] = []
        self._postings: dict[tuple[bytes, str], list[int]] = {}
        self._posted = 0
        self._live = 0

    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def nbytes(self) -> int:
        return int(self._vecs.nbytes + self._alive.nbytes)

    def add(self, digest: bytes, scope: bytes, words: Words, vector: Vector) -> None:
        """Index ``digest`` (replacing its previous row)."""
        self.remove(digest)
        if self._free:
            row = self._free.pop()
            self._digest[row] = digest
            self._scope[row] = scope
            self._content[row] = frozenset(words.content)
            self._marked[row] = words.marked
        else:
            row = len(self._digest)
            if row >= len(self._alive):
                self._grow()
            self._digest.append(digest)
            self._scope.append(scope)
            self._content.append(frozenset(words.content))
            self._marked.append(words.marked)
        self._vecs[row] = vector
        self._alive[row] = True
        self._row_of[digest] = row
        for w in words.content:
            self._postings.setdefault((scope, w), []).append(row)
        self._posted += len(words.content)
        self._live += len(words.content)
        if self._posted > 64 * 1024 and self._posted > 4 * self._live:
            self._rebuild_postings()

    def remove(self, digest: bytes) -> None:
        row = self._row_of.pop(digest, None)
        if row is not None:
            self._alive[row] = False
            self._free.append(row)
            self._live -= len(self._content[row])

    def nearest(
        self, scope: bytes, words: Words, vector: Vector, threshold: float
    ) -> Neighbour | None:
        """The most similar live row in ``scope`` at or above ``threshold`` that passes the
        entity guard, or None."""
        rows = self._candidates(scope, words)
        if not rows:
            return None
        idx = np.fromiter(rows, dtype=np.int64, count=len(rows))
        idx = idx[self._alive[idx]]
        if idx.size == 0:
            return None
        scores = self._vecs[idx] @ vector
        order = np.argsort(-scores)
        for j in order[:16]:
            score = float(scores[j])
            if score < threshold:
                break
            row = int(idx[j])
            if self._scope[row] != scope:
                continue
            if not self.guard or guard_allows(self._content[row], self._marked[row], words):
                return Neighbour(self._digest[row], score)
        return None

    def reembed(
        self,
        gone: str,
        canonical: Callable[[Words], Words],
        embed: Callable[[tuple[str, ...]], Vector],
    ) -> int:
        """The word ``gone`` was merged into a synonym: re-embed the rows that contain it and
        post them under its representative. Returns how many rows changed."""
        n = 0
        for scope, word in [k for k in self._postings if k[1] == gone]:
            for row in list(self._postings[(scope, word)]):  # appended to below
                if not self._alive[row] or gone not in self._content[row]:
                    continue
                w = canonical(Words(tuple(self._content[row]), self._marked[row]))
                self._content[row] = frozenset(w.content)
                self._vecs[row] = embed(w.content)
                for t in w.content:
                    rows = self._postings.setdefault((scope, t), [])
                    if not rows or rows[-1] != row:
                        rows.append(row)
                n += 1
        return n

    # ------------------------------------------------------------------ internals

    def _candidates(self, scope: bytes, words: Words) -> set[int]:
        k = self.max_candidates
        postings = self._postings
        if words.marked and self.guard:
            lists = [postings.get((scope, w)) for w in words.marked]
            if any(lst is None for lst in lists):
                return set()  # a marked token never seen in this scope: no match possible
            rarest = min((lst for lst in lists if lst is not None), key=len)
            return set(rarest[-k:])
        found = [lst for w in words.content if (lst := postings.get((scope, w))) is not None]
        found.sort(key=len)
        rows: set[int] = set()
        per = max(k // 3, 1)
        for lst in found[:3]:
            rows.update(lst[-per:])
        return rows

    def _rebuild_postings(self) -> None:
        self._postings = {}
        self._posted = 0
        for row in sorted(self._row_of.values()):
            for w in self._content[row]:
                self._postings.setdefault((self._scope[row], w), []).append(row)
                self._posted += 1

    def _grow(self) -> None:
        cap = len(self._alive) * 2
        vecs = np.zeros((cap, self.dim), dtype=np.float32)
        vecs[: len(self._vecs)] = self._vecs
        alive = np.zeros(cap, dtype=bool)
        alive[: len(self._alive)] = self._alive
        self._vecs, self._alive = vecs, alive
