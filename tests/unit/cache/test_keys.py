"""Canonical request keys and freshness words."""

from __future__ import annotations

import json

import pytest

from deerflow_controller.cache import canonicalise
from deerflow_controller.cache.text import is_time_sensitive, words


def test_json_formatting_key_order_and_nfc_do_not_change_the_key() -> None:
    a = canonicalise("search", b'{"query": "Caf\xc3\xa9 prices ", "max_results": 5}', "")
    b = canonicalise("search", '{"max_results":5,"query":"Cafe\u0301 prices"}'.encode(), "")
    assert a.digest == b.digest


def test_options_that_change_the_answer_change_the_key() -> None:
    a = canonicalise("search", json.dumps({"query": "x", "max_results": 5}).encode(), "")
    b = canonicalise("search", json.dumps({"query": "x", "max_results": 3}).encode(), "")
    c = canonicalise("crawl", json.dumps({"query": "x", "max_results": 5}).encode(), "")
    assert len({a.digest, b.digest, c.digest}) == 3


def test_credentials_do_not_split_the_cache() -> None:
    a = canonicalise("search", json.dumps({"query": "x", "api_key": "k1"}).encode(), "")
    b = canonicalise("search", json.dumps({"query": "x", "api_key": "k2"}).encode(), "")
    assert a.digest == b.digest


def test_similarity_scope_leaves_out_only_the_text_field() -> None:
    a = canonicalise("search", json.dumps({"query": "JD share", "depth": 1}).encode(), "query")
    b = canonicalise("search", json.dumps({"query": "share of JD", "depth": 1}).encode(), "query")
    c = canonicalise("search", json.dumps({"query": "JD share", "depth": 2}).encode(), "query")
    assert a.digest != b.digest and a.scope == b.scope != c.scope
    assert a.has_field and a.text == "JD share"


def test_non_json_payloads_are_hashed_as_bytes() -> None:
    a = canonicalise("echo", b"hello", "")
    assert a.digest == canonicalise("echo", b"hello", "").digest
    assert a.digest != canonicalise("echo", b"hello ", "").digest
    assert canonicalise("echo", b"{not json", "").digest != a.digest


def test_nan_and_absurd_nesting_cannot_be_keyed() -> None:
    with pytest.raises(ValueError):
        canonicalise("h", b'{"x": NaN}', "")
    with pytest.raises(ValueError):
        canonicalise("h", b"[" * 100 + b"]" * 100, "")


@pytest.mark.parametrize(
    ("text", "sensitive"),
    [
        ("latest EV sales in China", True),
        ("Tesla news", True),
        ("what happened today", True),
        ("EV sales 2026", True),
        ("EV sales in China", False),
        ("newsletter pricing", False),
        ("the greatest latestness", False),
    ],
)
def test_time_sensitive_words(text: str, sensitive: bool) -> None:
    assert is_time_sensitive(text, ("latest", "today", "news"), True) is sensitive


def test_entities_years_and_time_words_are_marked_fillers_are_dropped() -> None:
    w = words("Please tell me the latest Meituan delivery market shares 2026")
    assert w.marked == {"meituan", "2026", "latest"}
    assert w.content == ("latest", "meituan", "delivery", "market", "share", "2026")
