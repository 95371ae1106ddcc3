"""What the simulated providers say: chat replies, search hits and reader pages.

All of it is deterministic, a function of the request and the configured seed only: the same
query returns the same hits and the same URL the same page, as a cache in front of the real
providers would see. Random generators here are seeded with text (CPython hashes a str seed
with SHA-512), so the output is stable across runs and processes, unlike ``hash()``.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

__all__ = [
    "CrawlOutcome",
    "SearchHit",
    "chat_reply",
    "crawl_outcome",
    "reader_page",
    "search_hits",
]

SEARCH_MEDIAN_BYTES = 10_000
"""Median size of a search response (docs/WORKLOAD.md: 10 KB, from 2 to 100 KB)."""
SEARCH_SIGMA = 0.6
SEARCH_MIN_BYTES, SEARCH_MAX_BYTES = 2_000, 100_000

PAGE_MEDIAN_BYTES = 1_000
"""Median size of a reader page: about 1 KB after DeerFlow's truncation."""
PAGE_SIGMA = 0.3
PAGE_MIN_BYTES, PAGE_MAX_BYTES = 300, 4_000

_FILLER = (
    "market",
    "analysis",
    "report",
    "growth",
    "share",
    "revenue",
    "data",
    "trend",
    "forecast",
    "industry",
    "customers",
    "platform",
    "strategy",
    "competition",
    "regional",
    "quarterly",
    "survey",
    "annual",
    "research",
    "evidence",
    "source",
    "model",
    "policy",
    "pricing",
    "adoption",
    "supply",
    "demand",
    "logistics",
    "study",
    "sector",
    "investment",
    "risk",
    "performance",
    "segment",
    "technology",
    "network",
    "delivery",
    "service",
    "users",
    "operators",
    "rising",
    "estimate",
)
_DOMAINS = ("example.com", "news.example.org", "research.example.net", "wiki.example.edu")
_WORD = re.compile(r"[A-Za-z0-9]+")


def _rng(*parts: object) -> random.Random:
    return random.Random("\x1f".join(str(part) for part in parts))


def _log_normal_size(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(median * math.exp(sigma * rng.gauss(0.0, 1.0)))))


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)] or ["topic"]


def _prose(rng: random.Random, topic: Sequence[str], size: int) -> str:
    """About ``size`` characters of sentences mixing the topic's words with filler."""
    out: list[str] = []
    length = 0
    while length < size:
        words = [rng.choice(topic) if rng.random() < 0.3 else rng.choice(_FILLER)]
        words += [rng.choice(_FILLER) for _ in range(rng.randint(6, 14))]
        sentence = " ".join(words).capitalize() + "."
        out.append(sentence)
        length += len(sentence) + 1
    return " ".join(out)[:size]


def chat_reply(model: str, prompt: str, seed: int) -> str:
    """A short reply that depends only on the model, the prompt text and the seed."""
    rng = _rng(seed, "chat", model, prompt)
    topic = _words(prompt)[-12:]
    return f"[{model}] " + _prose(rng, topic, rng.randint(80, 240))


@dataclass(frozen=True, slots=True)
class SearchHit:
    title: str
    url: str
    content: str
    score: float


@functools.lru_cache(maxsize=4096)
def search_hits(query: str, max_results: int, seed: int) -> tuple[SearchHit, ...]:
    """``max_results`` hits whose JSON totals a log-normal size around 10 KB for this query."""
    rng = _rng(seed, "search", query, max_results)
    topic = _words(query)
    total = _log_normal_size(rng, SEARCH_MEDIAN_BYTES, SEARCH_SIGMA, SEARCH_MIN_BYTES,
                             SEARCH_MAX_BYTES)  # fmt: skip
    # Titles, URLs, scores and JSON punctuation take about 150 bytes a hit.
    per_hit = max(80, total // max(1, max_results) - 150)
    slug = "-".join(topic[:6])
    hits = []
    for i in range(max_results):
        domain = rng.choice(_DOMAINS)
        title = " ".join(topic[:8]).title() + f" - {rng.choice(_FILLER).title()} {i + 1}"
        url = f"https://{domain}/{slug}/{rng.randrange(16**8):08x}"
        score = round(0.95 - i * (0.6 / max(1, max_results)) - rng.random() * 0.02, 4)
        hits.append(SearchHit(title, url, _prose(rng, topic, per_hit), score))
    return tuple(hits)


class CrawlOutcome(StrEnum):
    """What the reader makes of a URL."""

    PAGE = "page"
    EMPTY = "empty"
    """A 200 with an empty body: the page rendered to nothing (a script-only site)."""
    UNPROCESSABLE = "unprocessable"
    """A 422: the page could not be fetched or parsed."""


def crawl_outcome(url: str, seed: int, empty_rate: float) -> CrawlOutcome:
    """Whether ``url`` reads as a page; a share ``empty_rate`` of URLs fail, half of them empty
    and half 422, always the same way for the same URL and seed."""
    rng = _rng(seed, "crawl-outcome", url)
    if rng.random() >= empty_rate:
        return CrawlOutcome.PAGE
    return CrawlOutcome.EMPTY if rng.random() < 0.5 else CrawlOutcome.UNPROCESSABLE


@functools.lru_cache(maxsize=4096)
def reader_page(url: str, seed: int) -> str:
    """About 1 KB of markdown for ``url``, in Jina reader's layout (Title, URL Source, content)."""
    rng = _rng(seed, "page", url)
    parts = urlsplit(url)
    topic = _words(f"{parts.netloc} {parts.path}")
    title = " ".join(topic[-6:]).title()
    size = _log_normal_size(rng, PAGE_MEDIAN_BYTES, PAGE_SIGMA, PAGE_MIN_BYTES, PAGE_MAX_BYTES)
    page = f"Title: {title}\n\nURL Source: {url}\n\nMarkdown Content:\n# {title}\n"
    while len(page) < size:
        heading = f"## {rng.choice(_FILLER).title()} {rng.choice(topic).title()}"
        page += f"\n{heading}\n\n{_prose(rng, topic, rng.randint(150, 400))}\n"
    return page[:size]
