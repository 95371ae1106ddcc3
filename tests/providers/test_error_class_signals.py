"""Each provider failure carries its recovery class: RATE_LIMITED, TRANSIENT, FATAL or SOFT."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from deerflow_agent import ErrorClass
from deerflow_agent._provider import error_class
from deerflow_agent.providers import crawl, llm, search
from deerflow_simulator import KeyLimits

from .conftest import KEY, SimFactory, fatal, retryable, run, start_brownout
from .test_llm import chat


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, "rate_limit_exceeded", ErrorClass.RATE_LIMITED),
        (429, "limit_burst_rate", ErrorClass.RATE_LIMITED),
        (429, None, ErrorClass.RATE_LIMITED),
        (429, "insufficient_quota", ErrorClass.FATAL),
        (403, "QuotaExceeded", ErrorClass.FATAL),
        (401, "invalid_api_key", ErrorClass.FATAL),
        (403, None, ErrorClass.FATAL),
        (404, None, ErrorClass.FATAL),
        (400, "content_filter", ErrorClass.SOFT),
        (400, "SensitiveContentDetected", ErrorClass.SOFT),
        (400, "DataInspectionFailed", ErrorClass.SOFT),
        (500, "content_filter", ErrorClass.TRANSIENT),  # a 5xx is the provider's trouble
        (503, None, ErrorClass.TRANSIENT),
        (408, None, ErrorClass.TRANSIENT),
        (425, None, ErrorClass.TRANSIENT),
    ],
)
def test_status_and_code_decide_the_class(
    status: int, code: str | None, expected: ErrorClass
) -> None:
    assert error_class(status, code) is expected


async def test_a_429_is_rate_limited(simulator: SimFactory) -> None:
    async with simulator(keys={KEY: KeyLimits(rpm=1)}) as sim:
        await run(search, {"query": "q", "api_key": KEY, "base_url": sim.url})
        error = await retryable(search, {"query": "q", "api_key": KEY, "base_url": sim.url})

    assert error.error_class is ErrorClass.RATE_LIMITED


async def test_a_burst_rate_429_is_rate_limited(simulator: SimFactory) -> None:
    burst = KeyLimits(burst_slope=0.0, burst_floor_rps=1.0, burst_window_s=1.0)
    async with simulator(keys={KEY: burst}) as sim:
        await run(llm, chat(sim))
        error = await retryable(llm, chat(sim))

    assert error.error_class is ErrorClass.RATE_LIMITED


async def test_a_rejected_key_is_fatal(simulator: SimFactory) -> None:
    async with simulator() as sim:
        error = await fatal(llm, chat(sim, api_key="sk-wrong-key-0000000000"))

    assert error.error_class is ErrorClass.FATAL


async def test_a_brownout_5xx_is_transient(simulator: SimFactory) -> None:
    async with simulator() as sim:
        await start_brownout(sim)
        error = await retryable(
            crawl, {"url": "https://e.org/", "api_key": KEY, "base_url": sim.url}
        )

    assert error.error_class is ErrorClass.TRANSIENT


async def test_an_unreachable_provider_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    error = await retryable(
        llm, {"model": "m", "prompt": "hi", "api_key": KEY, "base_url": f"http://127.0.0.1:{port}"}
    )

    assert error.error_class is ErrorClass.TRANSIENT


@pytest.fixture
async def filtering_provider() -> AsyncIterator[str]:
    """A real HTTP server answering every chat completion as OpenAI answers a prompt its
    content filter refuses (the simulator has no content filter)."""

    async def refuse(request: web.Request) -> web.Response:
        body = {
            "error": {
                "message": "The response was filtered due to the prompt triggering the content "
                "management policy.",
                "type": "invalid_request_error",
                "code": "content_filter",
            }
        }
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_content_safety_rejection_is_soft_and_not_retried(filtering_provider: str) -> None:
    error = await fatal(
        llm, {"model": "m", "prompt": "x", "api_key": KEY, "base_url": filtering_provider}
    )

    assert error.error_class is ErrorClass.SOFT
    assert "content_filter" in error.message and "safety filter" in error.message
    assert KEY not in error.message
