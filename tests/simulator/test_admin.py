"""GET /stats and the /admin endpoints over real HTTP."""

from __future__ import annotations

import aiohttp

from deerflow_simulator import KeyLimits

from .conftest import StartSimulator
from .helpers import FakeClock, admin, chat, key_stats, read, search


async def test_stats_count_served_throttled_and_failed_per_key(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({"a": KeyLimits(rpm=120), "b": KeyLimits()}, crawl_empty_rate=0.0)
    totals = []
    for _ in range(3):
        reply = await chat(http, sim, key="a")
        if reply.status == 200:
            totals.append(reply.body["usage"]["total_tokens"])
    assert (await read(http, sim, "https://example.com/x", key="b")).status == 200
    await admin(http, sim, "brownout", {"error_rate": 1.0, "duration_s": 60})
    assert (await search(http, sim, key="b")).status in (500, 502, 503)
    await chat(http, sim, key="intruder")

    async with http.get(f"{sim.url}/stats") as response:
        stats = await response.json()
    a, b = stats["keys"]["a"], stats["keys"]["b"]
    assert (a["served"], a["throttled"], a["failed"]) == (2, 1, 0)
    assert a["throttled_by"] == {"rpm": 1, "tpm": 0, "concurrency": 0, "burst": 0}
    assert a["tokens"] == sum(totals)
    assert a["by_endpoint"]["chat"]["served"] == 2
    assert (b["served"], b["throttled"], b["failed"]) == (1, 0, 1)
    assert b["by_endpoint"]["search"]["failed"] == 1
    assert b["by_endpoint"]["reader"]["served"] == 1
    assert stats["keys"]["intruder"]["unauthorized"] == 1
    assert a["in_flight"] == 0 and a["max_in_flight"] == 1
    assert stats["brownout"]["error_rate"] == 1.0
    assert sim.stats()["keys"]["a"] == a


async def test_brownout_answers_5xx_for_its_share(
    start: StartSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    sim = await start(time_scale=0.0)
    reply = await admin(http, sim, "brownout", {"error_rate": 0.3, "duration_s": 60})
    assert reply.status == 200
    statuses = [(await chat(http, sim, content=f"q{i}")).status for i in range(200)]
    failures = [s for s in statuses if s != 200]
    assert set(failures) <= {500, 502, 503}
    assert 40 <= len(failures) <= 80  # 30 % of 200
    assert key_stats(sim)["failed"] == len(failures)
    clock.advance(61)  # the brown-out is over
    assert {(await chat(http, sim)).status for _ in range(20)} == {200}
    assert sim.stats()["brownout"] is None


async def test_a_failed_chat_says_why_in_openais_shape(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start(error_rate=1.0)
    reply = await chat(http, sim)
    assert reply.status in (500, 502, 503)
    assert reply.body["error"]["type"] == "server_error"
    assert reply.body["error"]["message"]


async def test_reset_zeroes_the_counters_and_can_refill_the_buckets(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({"k": KeyLimits(rpm=60)})
    assert [(await chat(http, sim, key="k")).status for _ in range(2)] == [200, 429]
    assert (await admin(http, sim, "reset")).status == 200
    counters = key_stats(sim, "k")
    assert (counters["served"], counters["throttled"], counters["max_in_flight"]) == (0, 0, 0)
    assert counters["by_endpoint"] == {}
    assert (await chat(http, sim, key="k")).status == 429  # the bucket is still empty
    await admin(http, sim, "reset", {"limiters": True})
    assert (await chat(http, sim, key="k")).status == 200


async def test_admin_limits_change_a_key_at_run_time(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({"k": KeyLimits(rpm=60, concurrency=4)})
    assert [(await chat(http, sim, key="k")).status for _ in range(2)] == [200, 429]
    reply = await admin(http, sim, "limits", {"key": "k", "rpm": None})
    assert reply.status == 200
    assert reply.body["limits"]["rpm"] is None
    assert reply.body["limits"]["concurrency"] == 4  # fields left out are kept
    assert (await chat(http, sim, key="k")).status == 200
    assert (await chat(http, sim, key="new")).status == 401
    await admin(http, sim, "limits", {"key": "new", "rpm": 600})
    reply = await chat(http, sim, key="new")
    assert reply.status == 200
    assert reply.headers["x-ratelimit-limit-requests"] == "600"


async def test_admin_rejects_bad_input_with_400(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    bad = [
        ("limits", {"key": "k", "rpm": -1}, "rpm must be > 0"),
        ("limits", {"rpm": 5}, "'key' is required"),
        ("limits", {"key": "k", "qps": 5}, "unknown field 'qps'"),
        ("brownout", {"error_rate": 1.5}, "'error_rate' is required, a number from 0 to 1"),
        ("brownout", {"error_rate": 0.5, "duration_s": 0}, "'duration_s'"),
        ("reset", {"limiters": "yes"}, "'limiters' must be true or false"),
    ]
    for path, body, message in bad:
        reply = await admin(http, sim, path, body)
        assert reply.status == 400, path
        assert message in reply.body["error"]["message"], reply.body
