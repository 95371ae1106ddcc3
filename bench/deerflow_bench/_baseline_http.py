"""What the baselines share: the provider requests, a clock they can be tested with, and the
record of what each research job met.

The requests are the ones the control plane's ``llm``, ``search`` and ``crawl`` handlers make
(``agent/deerflow_agent/providers.py``): ``POST /v1/chat/completions`` with a Bearer key,
``POST /search`` with ``api_key`` in the body, ``GET /r/{url}`` with a Bearer key; one HTTP
request per call and no retry here, so each baseline's own retry policy is the only one.
A non-2xx answer raises :class:`ProviderError` whose text reads like the provider SDKs' errors
(``Error code: 429 - ...``), which is what DeerFlow's substring classifiers look at.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ._research_workload import Call

TOOL_TIMEOUT_S = 60.0
LLM_TIMEOUT_S = 600.0


class Clock(Protocol):
    """Time as a baseline sees it: tests pass a fake whose ``sleep`` only advances ``now``."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ProviderError(Exception):
    """A provider's non-2xx answer, or no answer (``status`` 0: connection error)."""

    def __init__(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        """The answer's Retry-After headers (``retry-after``, ``retry-after-ms``), if any."""
        text = f"Error code: {status} - {body[:300]}" if status else f"Connection error: {body}"
        super().__init__(text)

    @property
    def no_content(self) -> bool:
        """The reader could not extract the page (422): the same answer on every try, which no
        executor can change; counted apart from the failures an executor could have avoided."""
        return self.status == 422


@dataclass(frozen=True, slots=True)
class Providers:
    """Where the providers are and the key of each (one account per provider, shared by every
    process, as real deployments share their keys)."""

    base_url: str
    llm_key: str
    search_key: str
    crawl_key: str


async def request(
    session: aiohttp.ClientSession, providers: Providers, call: Call, *, timeout_s: float = 0.0
) -> bytes:
    """One HTTP request for ``call``; raises ProviderError, or TimeoutError past ``timeout_s``
    (0: the provider's default, as the handlers use)."""
    base = providers.base_url.rstrip("/")
    kwargs: dict[str, Any]
    if call.kind == "llm":
        method, url = "POST", f"{base}/v1/chat/completions"
        kwargs = {
            "json": call.payload,
            "headers": {"Authorization": f"Bearer {providers.llm_key}"},
        }
        default = LLM_TIMEOUT_S
    elif call.kind == "search":
        method, url = "POST", f"{base}/search"
        body = {
            "api_key": providers.search_key,
            "query": call.payload["query"],
            "max_results": call.payload.get("max_results", 5),
            "search_depth": call.payload.get("search_depth", "basic"),
        }
        kwargs = {"json": body}
        default = TOOL_TIMEOUT_S
    else:
        method, url = "GET", f"{base}/r/{call.payload['url']}"
        kwargs = {"headers": {"Authorization": f"Bearer {providers.crawl_key}"}}
        default = TOOL_TIMEOUT_S
    timeout = aiohttp.ClientTimeout(total=timeout_s or default)
    try:
        async with session.request(method, url, timeout=timeout, **kwargs) as resp:
            data = await resp.read()
            if resp.status >= 300:
                retry = {
                    k.lower(): v
                    for k, v in resp.headers.items()
                    if k.lower() in ("retry-after", "retry-after-ms")
                }
                raise ProviderError(resp.status, data.decode(errors="replace"), retry)
            return data
    except aiohttp.ClientConnectionError as e:
        raise ProviderError(0, type(e).__name__) from None
    except TimeoutError:
        raise ProviderError(0, "request timeout") from None


@dataclass(slots=True)
class JobRecord:
    """What one research job met, in one process. Times are ``time.time()`` seconds."""

    id: str
    arrival: float
    end: float = 0.0
    failed: bool = False
    """No report: the coordinator, planner or reporter call failed for good."""
    failed_steps: int = 0
    tool_errors: int = 0
    """Searches and crawls that ended in an error an executor could have avoided (429, 5xx,
    timeout, connection): the report was written without them."""
    no_content: int = 0
    cacheable: int = 0
    cache_hits: int = 0
    calls: int = 0
    """Provider calls completed (successful answers), cache hits excluded."""
    busy_s: float = 0.0
    """Slot time spent with a provider request in flight."""

    @property
    def degraded(self) -> bool:
        return not self.failed and (self.failed_steps > 0 or self.tool_errors > 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "arrival": self.arrival,
            "end": self.end,
            "failed": self.failed,
            "degraded": self.degraded,
            "failed_steps": self.failed_steps,
            "tool_errors": self.tool_errors,
            "no_content": self.no_content,
            "cacheable": self.cacheable,
            "cache_hits": self.cache_hits,
            "calls": self.calls,
            "busy_s": self.busy_s,
        }


@dataclass(slots=True)
class SlotLedger:
    """Available slot time of a process: its pools' width integrated over time."""

    slot_s: float = 0.0
    _width: int = 0
    _since: float = field(default_factory=time.monotonic)

    def set_width(self, width: int) -> None:
        now = time.monotonic()
        self.slot_s += self._width * (now - self._since)
        self._width, self._since = width, now

    def add(self, delta: int) -> None:
        self.set_width(self._width + delta)

    def close(self) -> float:
        self.set_width(0)
        return self.slot_s
