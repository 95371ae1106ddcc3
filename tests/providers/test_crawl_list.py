"""The crawl handler reads a list of URLs at once, reporting each page's failure in its output."""

from __future__ import annotations

import json

import pytest

from deerflow_agent import ErrorClass, HandlerEnvironment
from deerflow_agent.providers import crawl
from deerflow_common import signals
from deerflow_simulator import KeyLimits
from deerflow_simulator.content import CrawlOutcome

from .conftest import KEY, SIM_ALLOW, SimFactory, fatal, retryable, run
from .test_search_and_crawl import url_that


def pages(base_url: str, urls: list[str], **extra: object) -> dict[str, object]:
    return {"urls": urls, "api_key": KEY, "base_url": base_url, **extra}


async def test_a_list_crawl_returns_one_result_per_url_in_order(simulator: SimFactory) -> None:
    urls = [f"https://example.com/page-{i}" for i in range(6)]
    env = HandlerEnvironment(http_allow=SIM_ALLOW)
    async with simulator(crawl_empty_rate=0.0) as sim:
        result = await env.run_result(
            crawl, json.dumps(pages(sim.url, urls, concurrency=2)).encode()
        )

    out = json.loads(result.output)["results"]
    assert [r["url"] for r in out] == urls
    assert all(r["url"] in r["content"] for r in out)
    assert result.metadata[signals.HTTP_STATUS] == "200"
    assert [f for f, _ in env.progress] == [i / 6 for i in range(1, 7)]


async def test_a_page_that_fails_is_reported_in_the_output_and_the_others_still_succeed(
    simulator: SimFactory,
) -> None:
    good = url_that(CrawlOutcome.EMPTY)  # with every URL failing, an empty page is a success
    bad = url_that(CrawlOutcome.UNPROCESSABLE)
    async with simulator(crawl_empty_rate=1.0) as sim:
        result = await run(crawl, pages(sim.url, [good, bad, "ftp://not-a-page"]))

    first, second, third = json.loads(result.output)["results"]
    assert (first["url"], first["content"]) == (good, "")
    assert second["url"] == bad and "422" in second["error"]
    assert (second["error_class"], second["retryable"]) == ("FATAL", False)
    assert third["url"] == "ftp://not-a-page" and "urls[2]" in third["error"]


async def test_a_list_where_every_page_fails_fails_the_attempt_with_the_first_error(
    simulator: SimFactory,
) -> None:
    async with simulator(keys={KEY: KeyLimits(rpm=1)}, crawl_empty_rate=0.0) as sim:
        await run(crawl, {"url": "https://example.com/a", "api_key": KEY, "base_url": sim.url})
        error = await retryable(
            crawl, pages(sim.url, ["https://example.com/b", "https://example.com/c"])
        )

    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.metadata[signals.HTTP_STATUS] == "429"


async def test_a_429_among_successes_is_reported_in_the_metadata_for_the_limiter(
    simulator: SimFactory,
) -> None:
    async with simulator(keys={KEY: KeyLimits(rpm=1)}, crawl_empty_rate=0.0) as sim:
        result = await run(
            crawl, pages(sim.url, ["https://example.com/a", "https://example.com/b"], concurrency=1)
        )

    first, second = json.loads(result.output)["results"]
    assert "content" in first
    assert second["error_class"] == "RATE_LIMITED" and second["retryable"]
    assert result.metadata[signals.HTTP_STATUS] == "429"


async def test_a_split_list_crawl_merges_to_the_same_pages_as_the_whole(
    simulator: SimFactory,
) -> None:
    urls = [f"https://example.com/p{i}" for i in range(5)]
    async with simulator(crawl_empty_rate=0.0) as sim:
        payload = json.dumps(pages(sim.url, urls)).encode()
        env = HandlerEnvironment(http_allow=SIM_ALLOW)
        whole = json.loads(await env.run(crawl, payload))
        merged = json.loads(await env.run_split(crawl, payload, chunk=2))

    assert merged == whole


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"urls": []}, "non-empty list"),
        ({"urls": "https://example.com/"}, "non-empty list"),
        ({"urls": [f"https://e.org/{i}" for i in range(101)]}, "more than 100"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 17}, "concurrency"),
    ],
)
async def test_a_malformed_url_list_is_fatal_and_says_why(
    simulator: SimFactory, change: dict[str, object], complaint: str
) -> None:
    async with simulator() as sim:
        error = await fatal(crawl, {**pages(sim.url, ["https://e.org/"]), **change})

    assert complaint in error.message
