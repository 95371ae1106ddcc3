"""GET /r/{url} (Jina-reader-like) over real HTTP."""

from __future__ import annotations

import aiohttp

from deerflow_simulator import KeyLimits

from .conftest import StartSimulator
from .helpers import KEY, key_stats, read


async def test_reader_returns_markdown_for_a_url(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start(crawl_empty_rate=0.0)
    reply = await read(http, sim, "https://example.com/ev/battery-prices")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "URL Source: https://example.com/ev/battery-prices" in reply.text
    assert "\n# " in reply.text and "\n## " in reply.text
    assert 300 <= len(reply.text) <= 5_000
    again = await read(http, sim, "https://example.com/ev/battery-prices")
    assert again.text == reply.text
    assert (await read(http, sim, "https://example.com/other")).text != reply.text


async def test_reader_keeps_the_query_string_of_the_url(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start(crawl_empty_rate=0.0)
    reply = await read(http, sim, "https://example.com/search?q=ev&page=2")
    assert "URL Source: https://example.com/search?q=ev&page=2" in reply.text


async def test_reader_fails_a_share_of_urls_the_same_way_each_time(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start(crawl_empty_rate=0.5, time_scale=0.0)
    urls = [f"https://site{i}.example.com/page" for i in range(80)]
    first = [await read(http, sim, url) for url in urls]
    outcomes = [(r.status, r.text == "") for r in first]
    empty, unprocessable = outcomes.count((200, True)), outcomes.count((422, False))
    assert empty > 5 and unprocessable > 5
    assert 24 <= empty + unprocessable <= 56  # about half
    assert [(r.status, r.text == "") for r in [await read(http, sim, u) for u in urls]] == outcomes
    failed = next(r for r in first if r.status == 422)
    assert failed.body["name"] == "AssertionFailureError"


async def test_reader_429_has_retry_after(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({KEY: KeyLimits(rpm=30)}, crawl_empty_rate=0.0)
    assert (await read(http, sim, "https://example.com/a")).status == 200
    reply = await read(http, sim, "https://example.com/b")
    assert reply.status == 429
    assert reply.headers["retry-after"] == "2"
    assert reply.body["name"] == "RateLimitTriggeredError"
    assert key_stats(sim)["by_endpoint"]["reader"]["throttled"] == 1


async def test_reader_with_an_unknown_key_gets_401(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    assert (await read(http, sim, "https://example.com/a", key="jina_wrong")).status == 401
    assert (await read(http, sim, "https://example.com/a", key=None)).status == 401
