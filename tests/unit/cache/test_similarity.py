"""The nearest-neighbour index on its own."""

from __future__ import annotations

from deerflow_controller.cache import SimilarityIndex
from deerflow_controller.cache.embedding import NgramEmbedder
from deerflow_controller.cache.text import words

E = NgramEmbedder(256)


def add(ix: SimilarityIndex, name: bytes, text: str, scope: bytes = b"s") -> None:
    w = words(text)
    ix.add(name, scope, w, E.embed(w.content))


def near(ix: SimilarityIndex, text: str, threshold: float, scope: bytes = b"s") -> bytes | None:
    w = words(text)
    n = ix.nearest(scope, w, E.embed(w.content), threshold)
    return n.digest if n else None


def test_reordered_words_embed_identically() -> None:
    a, b = words("JD delivery market share"), words("market share of JD delivery")
    assert float(E.embed(a.content) @ E.embed(b.content)) > 0.999


def test_nearest_finds_the_paraphrase_and_not_the_sibling() -> None:
    ix = SimilarityIndex(256)
    add(ix, b"jd", "JD delivery market share in China")
    add(ix, b"mt", "Meituan delivery market share in China")
    assert near(ix, "China: market share of JD delivery", 0.9) == b"jd"
    assert near(ix, "Ele.me delivery market share in China", 0.3) is None


def test_removed_rows_are_never_returned_and_rows_are_reused() -> None:
    ix = SimilarityIndex(256, capacity=2)
    add(ix, b"a", "Tesla EV sales")
    ix.remove(b"a")
    assert near(ix, "Tesla EV sales", 0.5) is None
    add(ix, b"b", "BYD EV sales")
    add(ix, b"c", "NIO EV sales")
    add(ix, b"d", "Tesla EV sales")  # grows past the initial capacity
    assert near(ix, "EV sales of Tesla", 0.9) == b"d" and len(ix) == 3


def test_other_scopes_are_not_compared() -> None:
    ix = SimilarityIndex(256)
    add(ix, b"a", "Tesla EV sales", scope=b"depth=1")
    assert near(ix, "Tesla EV sales", 0.5, scope=b"depth=2") is None


def test_candidates_stay_bounded_in_a_large_scope() -> None:
    ix = SimilarityIndex(256, max_candidates=32)
    for i in range(500):
        add(ix, f"r{i}".encode(), f"Tesla EV sales region{i}")
    assert len(ix._candidates(b"s", words("Tesla battery"))) <= 32
    assert near(ix, "EV sales of Tesla region499", 0.9) == b"r499"
