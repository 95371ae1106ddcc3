"""The agent's HTTP side (``--metrics-port``): ``/metrics``, ``/healthz`` (200 while the
process runs) and ``/readyz`` (200 while the agent has a stream to a controller and is not
draining)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from deerflow_common.prometheus import CONTENT_TYPE

if TYPE_CHECKING:
    from ._session import Agent

__all__ = ["HealthServer"]


class HealthServer:
    """Serves ``agent``'s health and the metrics ``render`` returns."""

    def __init__(self, agent: Agent, render: Callable[[], str]) -> None:
        self._agent = agent
        self._render = render
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port. Raises
        OSError when the address cannot be bound (the port is taken, the host is not ours)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(
                runner, host, port, reuse_address=True, ssl_context=ssl_context
            ).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        return int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        agent = self._agent
        ready = agent.connected and not agent.draining
        body = {"ready": ready, "connected": agent.connected, "draining": agent.draining}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._render().encode(), headers={"Content-Type": CONTENT_TYPE})
