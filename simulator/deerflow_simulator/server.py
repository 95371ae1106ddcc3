"""``Simulator``: the simulated providers as a real HTTP server (aiohttp) on one port.

    async with Simulator(SimConfig(keys={"k": KeyLimits(rpm=500)})) as sim:
        ...  # point clients at sim.url; read sim.stats()

Endpoints: ``POST /v1/chat/completions`` (OpenAI), ``POST /search`` (Tavily), ``GET /r/{url}``
(Jina reader), ``GET /stats`` and ``POST /admin/{reset,brownout,limits}``; see ``endpoints``
and ``admin`` for what each answers.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from aiohttp import web

from .admin import AdminEndpoints
from .config import SimConfig
from .endpoints import ProviderEndpoints
from .state import Clock, ProviderState

__all__ = ["MAX_BODY_BYTES", "Simulator", "build_app"]

MAX_BODY_BYTES = 16 << 20
"""Largest request body: a 500 K-token prompt (DeerFlow's tail) is about 2 MB of text."""


def build_app(state: ProviderState) -> web.Application:
    """The aiohttp application serving ``state``, for embedding in another server."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(ProviderEndpoints(state).routes())
    app.add_routes(AdminEndpoints(state).routes())
    return app


class Simulator:
    """The simulated providers, listening on ``host:port`` while started.

    ``port=0`` picks a free port (read ``url`` or ``port`` after ``start``). ``clock`` drives the
    rate limits, brown-out windows and uptime; tests pass a fake one so limits do not refill
    between requests. Latencies are real ``asyncio.sleep``s, scaled by ``config.time_scale``.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        shutdown_timeout_s: float = 1.0,
        access_log: bool = False,
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self._requested_port = port
        self._state = ProviderState(self.config, clock)
        self._shutdown_timeout_s = shutdown_timeout_s
        """How long ``stop`` lets requests in flight finish before cancelling them; short, as
        a simulated crawl may sleep for seconds and nobody waits for its answer."""
        self._access_log = access_log
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def start(self) -> None:
        """Bind and serve. Raises OSError when the address is taken, RuntimeError when started
        twice."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        # None turns aiohttp's per-request log line off; the default logger is aiohttp.access.
        logging: dict[str, Any] = {} if self._access_log else {"access_log": None}
        runner = web.AppRunner(
            build_app(self._state),
            shutdown_timeout=self._shutdown_timeout_s,
            # A client that gives up cancels the simulated work and frees its concurrency slot,
            # as a provider stops generating when the connection drops.
            handler_cancellation=True,
            **logging,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening; requests in flight get ``shutdown_timeout_s`` to finish. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, with IPv6 hosts bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stats(self) -> dict[str, Any]:
        """What ``GET /stats`` answers: per-key counters, uptime and any brown-out."""
        return self._state.stats_json()
