"""Fixtures for the provider handlers: a real simulator over HTTP, and a clean environment.

The simulator runs with a frozen clock, so a key's buckets never refill during a test and
whether a request is throttled depends only on the requests before it, never on timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from deerflow_agent import FatalError, Handler, HandlerEnvironment, HandlerError, HandlerResult
from deerflow_agent._http import close_http_session
from deerflow_simulator import KeyLimits, SimConfig, Simulator

KEY = "sk-test-provider-key-0123456789"
"""The one key the simulator knows by default; long enough that a leak is unmistakable."""

ENV_VARS = [
    f"DEERFLOW_{provider}_{what}"
    for provider in ("LLM", "SEARCH", "CRAWL")
    for what in ("BASE_URL", "API_KEY")
]

SIM_ALLOW = "127.0.0.1/32"
"""The simulator listens on loopback, which an agent refuses for a payload's ``base_url`` unless
its ``--http-allow`` names it: these tests opt in, as an operator would for an internal URL."""

SimFactory = Callable[..., AbstractAsyncContextManager[Simulator]]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's provider settings."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(autouse=True)
async def shared_session() -> AsyncIterator[None]:
    """Close the agent's shared HTTP session on the test's own loop."""
    yield
    await close_http_session()


class _Running:
    def __init__(self, **config: Any) -> None:
        config.setdefault("keys", {KEY: KeyLimits()})
        config.setdefault("time_scale", 0.0)
        self.sim = Simulator(SimConfig(**config), host="127.0.0.1", port=0, clock=lambda: 1000.0)

    async def __aenter__(self) -> Simulator:
        return await self.sim.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self.sim.stop()


@pytest.fixture
def simulator() -> SimFactory:
    """``async with simulator(keys=..., crawl_empty_rate=...) as sim``: a started simulator whose
    only key is KEY, answering at once, stopped at the end of the block."""
    return _Running


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with KEY and no limits."""
    async with _Running() as running:
        yield running


async def run(handler: Handler, payload: dict[str, Any]) -> HandlerResult:
    """Run ``handler`` as the agent would, on a JSON payload."""
    env = HandlerEnvironment(http_allow=SIM_ALLOW)
    return await env.run_result(handler, json.dumps(payload).encode())


async def retryable(handler: Handler, payload: dict[str, Any]) -> HandlerError:
    """The retryable HandlerError ``handler`` raises on ``payload``."""
    with pytest.raises(HandlerError) as caught:
        await run(handler, payload)
    assert caught.value.retryable
    return caught.value


async def fatal(handler: Handler, payload: dict[str, Any]) -> FatalError:
    """The FatalError ``handler`` raises on ``payload``."""
    with pytest.raises(FatalError) as caught:
        await run(handler, payload)
    return caught.value


async def start_brownout(sim: Simulator, error_rate: float = 1.0) -> None:
    """Make the simulator fail ``error_rate`` of requests with a 5xx, through its admin API."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.url}/admin/brownout", json={"error_rate": error_rate, "duration_s": 3600}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
