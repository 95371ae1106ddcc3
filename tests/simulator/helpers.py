"""Small clients for the simulator's endpoints, and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from deerflow_simulator import Simulator

KEY = "test-key"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str
    body: Any
    """The JSON body, or None when the body is not JSON."""


async def _reply(response: aiohttp.ClientResponse) -> Reply:
    text = await response.text()
    body = await response.json() if response.content_type == "application/json" else None
    return Reply(response.status, response.headers, text, body)


def bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


async def chat(
    http: aiohttp.ClientSession,
    sim: Simulator,
    key: str | None = KEY,
    *,
    content: str = "What is the delivery market share of JD?",
    max_tokens: int | None = None,
    body: Any = None,
    data: str | None = None,
) -> Reply:
    """POST /v1/chat/completions with one user message, or with ``body`` (JSON) / ``data``."""
    if body is None and data is None:
        body = {"model": "sim-model", "messages": [{"role": "user", "content": content}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
    kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
    async with http.post(
        f"{sim.url}/v1/chat/completions", headers=bearer(key), **kwargs
    ) as response:
        return await _reply(response)


async def search(
    http: aiohttp.ClientSession,
    sim: Simulator,
    key: str | None = KEY,
    query: str = "JD delivery market share",
    **fields: Any,
) -> Reply:
    """POST /search with the key as ``api_key`` in the body."""
    body = {"query": query, **fields}
    if key is not None:
        body["api_key"] = key
    async with http.post(f"{sim.url}/search", json=body) as response:
        return await _reply(response)


async def read(
    http: aiohttp.ClientSession, sim: Simulator, url: str, key: str | None = KEY
) -> Reply:
    """GET /r/{url}."""
    async with http.get(f"{sim.url}/r/{url}", headers=bearer(key)) as response:
        return await _reply(response)


async def admin(http: aiohttp.ClientSession, sim: Simulator, path: str, body: Any = None) -> Reply:
    async with http.post(f"{sim.url}/admin/{path}", json=body) as response:
        return await _reply(response)


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` if it never does."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def key_stats(sim: Simulator, key: str = KEY) -> dict[str, Any]:
    stats: dict[str, Any] = sim.stats()["keys"][key]
    return stats
