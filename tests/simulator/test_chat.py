"""POST /v1/chat/completions over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from deerflow_common.signals import parse_duration_s
from deerflow_simulator import KeyLimits

from .conftest import StartSimulator
from .helpers import KEY, chat, eventually, key_stats


async def test_usage_counts_prompt_and_completion_tokens(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    reply = await chat(http, sim, content="x" * 403, max_tokens=200)
    assert reply.status == 200
    usage = reply.body["usage"]
    assert usage["prompt_tokens"] == 100  # 403 characters // 4
    assert 30 <= usage["completion_tokens"] <= 200
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert key_stats(sim)["tokens"] == usage["total_tokens"]


async def test_the_answer_has_openais_shape(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    body = (await chat(http, sim)).body
    assert body["object"] == "chat.completion"
    assert body["model"] == "sim-model"
    assert isinstance(body["id"], str) and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")


async def test_max_tokens_caps_every_completion(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    replies = [await chat(http, sim, content=f"q{i}", max_tokens=40) for i in range(30)]
    completions = [r.body["usage"]["completion_tokens"] for r in replies]
    assert all(30 <= n <= 40 for n in completions)
    # The median draw is 300 tokens, so most replies are cut short.
    assert sum(r.body["choices"][0]["finish_reason"] == "length" for r in replies) > 15


async def test_the_reply_is_deterministic_from_the_prompt(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()

    async def content(prompt: str) -> str:
        reply = await chat(http, sim, content=prompt)
        text: str = reply.body["choices"][0]["message"]["content"]
        return text

    first = await content("Meituan delivery market share")
    assert await content("Meituan delivery market share") == first
    assert await content("JD delivery market share") != first


async def test_requests_over_the_rpm_bucket_get_429_with_retry_after(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({KEY: KeyLimits(rpm=120)})  # holds 2 requests, refills 2 a second
    assert [(await chat(http, sim)).status for _ in range(2)] == [200, 200]
    reply = await chat(http, sim)
    assert reply.status == 429
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["retry-after-ms"] == "500"
    assert reply.body["error"]["type"] == "requests"
    assert reply.body["error"]["code"] == "rate_limit_exceeded"
    assert "try again in 500ms" in reply.body["error"]["message"]


async def test_tpm_budget_throttles_by_tokens(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({KEY: KeyLimits(tpm=600)})  # 10 tokens a second, no request limit
    first = await chat(http, sim, content="x" * 400, max_tokens=30)  # 100 + 30 tokens
    assert first.status == 200
    reply = await chat(http, sim, content="x" * 400, max_tokens=30)
    assert reply.status == 429
    assert reply.body["error"]["type"] == "tokens"
    assert reply.body["error"]["code"] == "rate_limit_exceeded"
    assert reply.headers["retry-after"] == "13"  # 120 tokens of debt, then 10, at 10 a second
    assert reply.headers["x-ratelimit-remaining-tokens"] == "0"
    assert key_stats(sim)["throttled_by"]["tpm"] == 1


async def test_the_concurrency_cap_rejects_the_extra_request(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({KEY: KeyLimits(concurrency=1)}, time_scale=100.0)  # replies take minutes
    slow = asyncio.create_task(chat(http, sim))
    await eventually(lambda: key_stats(sim)["in_flight"] == 1, "the first request in flight")
    reply = await chat(http, sim)
    assert reply.status == 429
    assert reply.body["error"]["type"] == "concurrency"
    assert reply.headers["retry-after"] == "1"
    slow.cancel()
    # The client hanging up frees the slot.
    await eventually(lambda: key_stats(sim)["in_flight"] == 0, "the slot freed")
    assert key_stats(sim)["cancelled"] == 1
    assert key_stats(sim)["throttled_by"]["concurrency"] == 1


async def test_burst_slope_answers_limit_burst_rate_within_rpm(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({KEY: KeyLimits(rpm=6000, burst_slope=0.5, burst_floor_rps=2)})
    assert [(await chat(http, sim)).status for _ in range(2)] == [200, 200]
    reply = await chat(http, sim)
    assert reply.status == 429
    assert reply.body["error"]["code"] == "limit_burst_rate"
    assert reply.body["error"]["type"] == "requests"
    assert int(reply.headers["x-ratelimit-remaining-requests"]) == 98  # RPM had room
    assert "retry-after" in reply.headers
    assert key_stats(sim)["throttled_by"]["burst"] == 1


async def test_ratelimit_headers_report_remaining_requests(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start({KEY: KeyLimits(rpm=600, tpm=60_000)})  # holds 10 requests, 1000 tokens
    replies = [await chat(http, sim, content="x" * 40, max_tokens=30) for _ in range(3)]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in replies] == ["9", "8", "7"]
    assert {r.headers["x-ratelimit-limit-requests"] for r in replies} == {"600"}
    resets = [parse_duration_s(r.headers["x-ratelimit-reset-requests"]) for r in replies]
    assert resets == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    # Tokens are reported as admission left them: 10 prompt + 30 max_tokens per request.
    assert replies[0].headers["x-ratelimit-limit-tokens"] == "60000"
    assert replies[0].headers["x-ratelimit-remaining-tokens"] == "960"
    assert parse_duration_s(replies[0].headers["x-ratelimit-reset-tokens"]) == pytest.approx(0.04)


async def test_an_unknown_key_gets_401_invalid_api_key(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    for key in ("wrong-key", None):
        reply = await chat(http, sim, key=key)
        assert reply.status == 401
        assert reply.body["error"]["code"] == "invalid_api_key"
        assert reply.body["error"]["message"]
        assert "x-ratelimit-limit-requests" not in reply.headers
    assert key_stats(sim, "wrong-key")["unauthorized"] == 1
    assert key_stats(sim, "<none>")["unauthorized"] == 1


async def test_the_status_for_unknown_keys_is_configurable(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start(unknown_key_status=403)
    assert (await chat(http, sim, key="nope")).status == 403


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": "{not json"}, "not valid JSON"),
        ({"data": ""}, "body is empty"),
        ({"body": ["a", "list"]}, "must be a JSON object"),
        ({"body": {"messages": [{"role": "user", "content": "hi"}]}}, "'model' is required"),
        ({"body": {"model": "m", "messages": []}}, "'messages' is required"),
        ({"body": {"model": "m", "messages": [{"content": "hi"}]}}, "string 'role'"),
        (
            {"body": {"model": "m", "messages": [{"role": "user", "content": 5}]}},
            "'messages[0].content' must be",
        ),
        (
            {"body": {"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}},
            "'max_tokens' must be a positive integer",
        ),
    ],
)
async def test_a_malformed_body_gets_400_with_a_clear_message(
    start: StartSimulator,
    http: aiohttp.ClientSession,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    sim = await start()
    reply = await chat(http, sim, **kwargs)
    assert reply.status == 400
    assert message in reply.body["error"]["message"]
    assert reply.body["error"]["type"] == "invalid_request_error"
    assert key_stats(sim)["invalid"] == 1


async def test_content_parts_count_toward_the_prompt(
    start: StartSimulator, http: aiohttp.ClientSession
) -> None:
    sim = await start()
    parts = [{"type": "text", "text": "x" * 40}, {"type": "image_url", "image_url": {}}]
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "y" * 40}, {"role": "user", "content": parts}],
    }
    reply = await chat(http, sim, body=body)
    assert reply.body["usage"]["prompt_tokens"] == 20
