"""POST /search (Tavily-like) over real HTTP."""

from __future__ import annotations

import json
import statistics

import aiohttp

from deerflow_simulator import KeyLimits

from .conftest import StartSimulator
from .helpers import KEY, bearer, key_stats, search


async def test_search_returns_the_results_asked_for(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    reply = await search(http, sim, query="latest EV battery prices", max_results=3)
    assert reply.status == 200
    assert reply.body["query"] == "latest EV battery prices"
    assert len(reply.body["results"]) == 3
    for hit in reply.body["results"]:
        assert set(hit) == {"title", "url", "content", "score"}
        assert hit["url"].startswith("https://")
    scores = [hit["score"] for hit in reply.body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert isinstance(reply.body["response_time"], float)
    assert len((await search(http, sim)).body["results"]) == 5  # the default


async def test_search_responses_are_about_ten_kilobytes(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start(time_scale=0.0)
    sizes = [len((await search(http, sim, query=f"topic number {i}")).text) for i in range(60)]
    assert 7_000 <= statistics.median(sizes) <= 14_000
    assert min(sizes) >= 2_000 and max(sizes) <= 110_000


async def test_search_results_are_deterministic_per_query(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    first = (await search(http, sim, query="JD delivery market share")).body["results"]
    assert (await search(http, sim, query="JD delivery market share")).body["results"] == first
    other = (await search(http, sim, query="Meituan delivery market share")).body["results"]
    assert other != first


async def test_search_429_has_no_retry_after(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({KEY: KeyLimits(rpm=60)})
    assert (await search(http, sim)).status == 200
    reply = await search(http, sim)
    assert reply.status == 429
    assert "retry-after" not in reply.headers
    assert "retry-after-ms" not in reply.headers
    assert "try again" in reply.body["detail"]["error"]


async def test_an_advanced_search_costs_two_requests(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    basic = await start({KEY: KeyLimits(rpm=120)})  # holds 2 requests
    assert [(await search(http, basic)).status for _ in range(2)] == [200, 200]
    advanced = await start({KEY: KeyLimits(rpm=120)})
    assert (await search(http, advanced, search_depth="advanced")).status == 200
    assert (await search(http, advanced)).status == 429


async def test_search_accepts_the_key_as_a_bearer_header(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    async with http.post(f"{sim.url}/search", json={"query": "q"}, headers=bearer(KEY)) as response:
        assert response.status == 200


async def test_search_with_an_unknown_key_gets_401(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    for key in ("tvly-wrong", None):
        reply = await search(http, sim, key=key)
        assert reply.status == 401
        assert "API key" in reply.body["detail"]["error"]
    assert key_stats(sim, "tvly-wrong")["unauthorized"] == 1


async def test_a_bad_search_request_gets_400(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    assert "search_depth" in (await search(http, sim, search_depth="deep")).body["detail"]["error"]
    assert "query" in (await search(http, sim, query="")).body["detail"]["error"]
    assert "max_results" in (await search(http, sim, max_results=0)).body["detail"]["error"]
    async with http.post(f"{sim.url}/search", data="{oops") as response:
        assert response.status == 400
        assert "not valid JSON" in json.loads(await response.text())["detail"]["error"]
    assert key_stats(sim)["invalid"] == 3
