"""The search and crawl handlers against the simulated Tavily-like and Jina-like providers."""

from __future__ import annotations

import json

import pytest

from deerflow_agent.providers import crawl, search
from deerflow_common import signals
from deerflow_simulator import KeyLimits, Simulator
from deerflow_simulator.content import CrawlOutcome, crawl_outcome

from .conftest import KEY, SimFactory, fatal, retryable, run, start_brownout

VOCABULARY = {v for k, v in vars(signals).items() if k.isupper() and isinstance(v, str)}


def query(sim: Simulator, **extra: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "query": "food delivery market share 2024",
        "max_results": 3,
        "api_key": KEY,
        "base_url": sim.url,
    }
    payload.update(extra)
    return payload


def page(sim: Simulator, url: str) -> dict[str, object]:
    return {"url": url, "api_key": KEY, "base_url": sim.url}


def url_that(outcome: CrawlOutcome, seed: int = 0) -> str:
    """A page URL the simulator (with every URL failing) answers with ``outcome``."""
    for i in range(1000):
        url = f"https://news.example.org/story-{i}"
        if crawl_outcome(url, seed, 1.0) is outcome:
            return url
    raise AssertionError(f"no URL among 1000 reads as {outcome}")


# ------------------------------------------------------------------------- search


async def test_a_search_returns_hits_trimmed_to_title_url_content_and_score(
    sim: Simulator,
) -> None:
    result = await run(search, query(sim))

    out = json.loads(result.output)
    assert out["query"] == "food delivery market share 2024"
    assert 1 <= len(out["results"]) <= 3
    for hit in out["results"]:
        assert set(hit) == {"title", "url", "content", "score"}
        assert hit["url"].startswith("http") and hit["content"]
    assert result.metadata[signals.HTTP_STATUS] == "200"
    assert set(result.metadata) <= VOCABULARY


async def test_a_search_429_is_retryable_without_a_retry_after(simulator: SimFactory) -> None:
    async with simulator(keys={KEY: KeyLimits(rpm=1)}) as sim:
        await run(search, query(sim))
        error = await retryable(search, query(sim))

    assert error.metadata[signals.HTTP_STATUS] == "429"
    assert signals.RETRY_AFTER_S not in error.metadata
    assert error.retry_after_s == 0
    assert "search provider" in error.message


async def test_a_search_with_a_rejected_key_is_fatal_without_the_key(sim: Simulator) -> None:
    wrong = "tvly-wrong-key-0123456789"

    error = await fatal(search, query(sim, api_key=wrong))

    assert error.metadata[signals.HTTP_STATUS] == "401"
    assert wrong not in error.message
    assert "DEERFLOW_SEARCH_API_KEY" in error.message


async def test_a_search_without_a_key_is_fatal_and_names_the_variable(sim: Simulator) -> None:
    payload = query(sim)
    del payload["api_key"]

    error = await fatal(search, payload)

    assert "DEERFLOW_SEARCH_API_KEY" in error.message


async def test_a_search_5xx_during_a_brownout_is_retryable(sim: Simulator) -> None:
    await start_brownout(sim)

    error = await retryable(search, query(sim))

    assert error.metadata[signals.HTTP_STATUS] in {"500", "502", "503"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"query": "  "}, "query"),
        ({"max_results": 0}, "max_results"),
        ({"search_depth": "deep"}, "search_depth"),
    ],
)
async def test_a_malformed_search_is_fatal_and_names_the_field(
    sim: Simulator, change: dict[str, object], field: str
) -> None:
    error = await fatal(search, query(sim, **change))

    assert field in error.message


# ------------------------------------------------------------------------- crawl


async def test_a_crawl_returns_the_page_as_text(simulator: SimFactory) -> None:
    async with simulator(crawl_empty_rate=0.0) as sim:
        result = await run(crawl, page(sim, "https://example.com/delivery/market"))

    out = json.loads(result.output)
    assert out["url"] == "https://example.com/delivery/market"
    assert "https://example.com/delivery/market" in out["content"]
    assert result.metadata[signals.HTTP_STATUS] == "200"
    assert set(result.metadata) <= VOCABULARY


async def test_a_crawl_of_an_empty_page_succeeds_with_empty_content(
    simulator: SimFactory,
) -> None:
    url = url_that(CrawlOutcome.EMPTY)
    async with simulator(crawl_empty_rate=1.0) as sim:
        result = await run(crawl, page(sim, url))

    assert json.loads(result.output)["content"] == ""
    assert result.metadata[signals.HTTP_STATUS] == "200"


async def test_a_crawl_the_reader_cannot_process_is_fatal(simulator: SimFactory) -> None:
    url = url_that(CrawlOutcome.UNPROCESSABLE)
    async with simulator(crawl_empty_rate=1.0) as sim:
        error = await fatal(crawl, page(sim, url))

    assert error.metadata[signals.HTTP_STATUS] == "422"
    assert "422" in error.message and "crawl provider" in error.message


async def test_a_crawl_429_is_retryable_with_the_readers_retry_after(
    simulator: SimFactory,
) -> None:
    async with simulator(keys={KEY: KeyLimits(rpm=1)}, crawl_empty_rate=0.0) as sim:
        await run(crawl, page(sim, "https://example.com/a"))
        error = await retryable(crawl, page(sim, "https://example.com/b"))

    assert error.metadata[signals.HTTP_STATUS] == "429"
    assert error.retry_after_s == float(error.metadata[signals.RETRY_AFTER_S]) > 0


async def test_a_crawl_without_a_key_is_fatal_and_names_the_variable(sim: Simulator) -> None:
    error = await fatal(crawl, {"url": "https://example.com/", "base_url": sim.url})

    assert "DEERFLOW_CRAWL_API_KEY" in error.message


async def test_a_crawl_of_something_that_is_not_a_web_address_is_fatal(sim: Simulator) -> None:
    error = await fatal(crawl, page(sim, "file:///etc/passwd"))

    assert "'url'" in error.message
