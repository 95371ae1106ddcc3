"""A real HTTP server on a loopback address that records every request it receives (method,
path, headers, body) and answers 200 with a small JSON body (shaped so that the llm and search
handlers accept it), a redirect for ``/redirect?to=URL``, or for ``/status/NNN/...`` that status
with an error message that echoes the request's credentials. Tests of what the agent sends where
(and what it must never send) use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from aiohttp import web


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingServer:
    """``async with RecordingServer("127.0.0.2") as server``: listening on a free port of
    ``host`` until the block ends; ``server.received`` lists the requests in order."""

    host: str = "127.0.0.1"
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def everything_received(self) -> str:
        """All the requests as one text (headers and bodies), to search for a leaked secret."""
        return "\n".join(
            f"{r.method} {r.path}\n{r.headers}\n{r.body.decode('utf-8', 'replace')}"
            for r in self.received
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(
            Received(request.method, request.path_qs, dict(request.headers), await request.read())
        )
        if request.path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        if request.path.startswith("/status/"):
            # A careless provider: fails with the status named and echoes the credentials.
            status = int(request.path.split("/")[2])
            said = f"rejected {request.headers.get('Authorization', '')} {request.query_string}"
            return web.json_response({"error": {"message": said}}, status=status)
        return web.json_response(
            {"ok": True, "choices": [{"message": {"content": "hi"}}], "results": []}
        )

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
