"""The default text embedding: hashed word and character-trigram features (numpy, no model).

Word unigrams carry the meaning; trigrams inside each word (with boundary marks, as fastText
does) make inflections and typos overlap. Only the words' set matters, so a reordered question
embeds the same. Features are hashed with CRC-32 (stable across processes, unlike ``hash``)
into ``dim`` signed buckets, and the vector is L2-normalised so a dot product is the cosine."""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.35


class NgramEmbedder:
    """Maps content words to a unit vector. Memoises feature hashes (bounded)."""

    __slots__ = ("_memo", "dim")

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self._memo: dict[str, tuple[list[int], list[float]]] = {}

    def _features(self, word: str) -> tuple[list[int], list[float]]:
        got = self._memo.get(word)
        if got is not None:
            return got
        idx: list[int] = []
        wts: list[float] = []
        grams = [f"w:{word}"]
        padded = f"<{word}>"
        grams.extend(padded[i : i + 3] for i in range(len(padded) - 2))
        for n, g in enumerate(grams):
            h = zlib.crc32(g.encode())
            idx.append(h % self.dim)
            w = _WORD_WEIGHT if n == 0 else _TRIGRAM_WEIGHT
            wts.append(w if (h >> 31) & 1 else -w)
        if len(self._memo) >= 200_000:
            self._memo.clear()
        self._memo[word] = (idx, wts)
        return idx, wts

    def embed(self, content: tuple[str, ...]) -> Vector:
        """A unit float32 vector (all zeros for no words)."""
        idx: list[int] = []
        wts: list[float] = []
        for word in content:
            i, w = self._features(word)
            idx.extend(i)
            wts.extend(w)
        if not idx:
            return np.zeros(self.dim, dtype=np.float32)
        v = np.bincount(idx, weights=wts, minlength=self.dim).astype(np.float32)
        norm = float(np.sqrt(v @ v))
        if norm > 0:
            v /= norm
        return v
