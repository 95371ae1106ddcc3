"""The controller's HTTP side, on the daemon's own event loop (aiohttp):

- ``GET /`` the live dashboard; ``GET /api/stats`` the JSON it polls (also what ``deerflow top``
  reads);
- ``GET /jobs`` the jobs pages (``/jobs#job=ID`` one job); ``GET /api/jobs`` (``limit``,
  ``cursor``, ``state``) and ``GET /api/job?id=ID`` (``task_limit``, ``task_offset``) the JSON
  they read: the admin API's ``ListJobs`` and ``GetJob`` answers (``service/job_views.py``);
- ``GET /metrics`` Prometheus text exposition;
- ``GET /healthz`` 200 while the process and its event loop answer (liveness);
- ``GET /readyz`` 200 while the controller serves its gRPC API and is not draining, else 503
  (readiness: a load balancer sends clients only to a ready controller; agents are not needed to
  accept jobs, so they are reported but do not decide it).

With ``--auth-file`` (``Observability.credentials``), ``/api/stats`` needs an admin token and
``/metrics`` a token of any role (``metrics`` included), ``/api/jobs`` and ``/api/job`` a user or
admin token (a user sees its own tenant's jobs, another tenant's job is 404 as one that does not
exist), as ``Authorization: Bearer <token>``; without one the answer is 401, with a token lacking
the role 403. ``/healthz``, ``/readyz`` and
the dashboard's page (static HTML, no data: it sends the token given in its URL's fragment,
``/#token=...``, to ``/api/stats``) stay open.

Every handler reads in-memory state and returns at once; nothing here blocks the loop.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger

from deerflow_common.prometheus import CONTENT_TYPE
from deerflow_controller.jobs_cli import as_dict
from deerflow_controller.observability.dashboard import PAGE
from deerflow_controller.observability.jobs_page import JOBS_PAGE
from deerflow_controller.service.auth import bearer
from deerflow_controller.service.credentials import Principal, Role
from deerflow_controller.service.job_service import no_job, visible
from deerflow_controller.service.job_views import ViewRefused, job_detail, list_jobs

if TYPE_CHECKING:
    from deerflow_controller.observability import Observability


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":"), allow_nan=False, default=str),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _principal(request: web.Request) -> Principal | None:
    """Who asked (set by the auth middleware); None when authentication is off."""
    who = request.get("principal")
    return who if isinstance(who, Principal) else None


def _int(query: Any, name: str) -> int:
    """A query parameter as an int (0 when absent); ViewRefused for one that is not."""
    text = query.get(name, "")
    try:
        return int(text) if text else 0
    except ValueError:
        raise ViewRefused(f"{name} must be an integer, not {text[:32]!r}") from None


class _RequestErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, except for requests its parser refuses (the client's fault, not
    ours): those are one WARNING line, at most one a minute (DEBUG in between), instead of a
    traceback with the bytes received. The usual one is a gRPC client given the HTTP port: its
    HTTP/2 preface is not HTTP/1."""

    QUIET_S = 60.0

    def __init__(self) -> None:
        super().__init__(server_logger, {})
        self._warned_at = -self.QUIET_S

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if not isinstance(exc_info, HttpProcessingError):
            super().exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        peer = args[0] if args else "a client"
        # The parser's message goes on to dump the bytes it got: keep its first line only.
        why = (exc_info.message or "").split("\n", 1)[0].strip(" :")[:80]
        if "PRI" in why:
            what = "an HTTP/2 connection (a gRPC client? gRPC is served on --port)"
        else:
            what = f"a request that is not HTTP/1 ({exc_info.code} {why})"
        now = time.monotonic()
        level = logging.WARNING if now - self._warned_at >= self.QUIET_S else logging.DEBUG
        if level == logging.WARNING:
            self._warned_at = now
        self.log(level, "HTTP side refused %s from %s", what, peer)


_NEEDS_ADMIN = frozenset({"/api/stats"})
_NEEDS_CLIENT = frozenset({"/api/jobs", "/api/job"})
"""Tenant-scoped: a user or admin token (not a metrics one)."""
_NEEDS_TOKEN = frozenset({"/api/stats", "/metrics"}) | _NEEDS_CLIENT


class HttpServer:
    """Serves one :class:`Observability`. :meth:`start` binds (raising OSError when the port is
    taken) and returns the bound port; :meth:`stop` closes every connection."""

    def __init__(self, obs: Observability) -> None:
        self.obs = obs
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self.dashboard)
        app.router.add_get("/api/stats", self.stats)
        app.router.add_get("/jobs", self.jobs_page)
        app.router.add_get("/api/jobs", self.jobs)
        app.router.add_get("/api/job", self.job)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, logger=_RequestErrorLog()
        )
        self.port = 0

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Bearer tokens on the data endpoints when authentication is on (never logged)."""
        credentials = self.obs.credentials
        path = request.path
        if credentials is None or path not in _NEEDS_TOKEN:
            response: web.StreamResponse = await handler(request)
            return response
        token = bearer([("authorization", request.headers.get("Authorization", ""))])
        who = credentials.current().client_by_token(token)
        if who is None:
            why = "is not valid here (unknown or revoked)" if token else "is missing"
            return web.json_response(
                {"error": f"{path} needs 'Authorization: Bearer <token>'; the token {why}"},
                status=401,
                headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
            )
        if path in _NEEDS_ADMIN and who.role is not Role.ADMIN:
            return web.json_response(
                {"error": f"{path} lists every tenant's work: it needs an admin token"},
                status=403,
                headers={"Cache-Control": "no-store"},
            )
        if path in _NEEDS_CLIENT and who.role is Role.METRICS:
            return web.json_response(
                {"error": f"{path} shows jobs: it needs a user or admin token, not a metrics one"},
                status=403,
                headers={"Cache-Control": "no-store"},
            )
        request["principal"] = who
        response = await handler(request)
        return response

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8")

    async def stats(self, request: web.Request) -> web.Response:
        return _json(self.obs.snapshot())

    async def jobs_page(self, request: web.Request) -> web.Response:
        return web.Response(text=JOBS_PAGE, content_type="text/html", charset="utf-8")

    async def jobs(self, request: web.Request) -> web.Response:
        shell = self.obs.shell
        q = request.query
        try:
            page = list_jobs(
                shell.scheduler.jobs.values(),
                _principal(request),
                shell.clock(),
                _int(q, "limit"),
                q.get("cursor", ""),
                q.get("state", ""),
                shown=shell.shown,
            )
        except ViewRefused as e:
            return _json({"error": str(e)}, 400)
        return _json(as_dict(page))

    async def job(self, request: web.Request) -> web.Response:
        shell = self.obs.shell
        q = request.query
        job_id = q.get("id", "")
        job = shell.job(job_id)
        if job is None or not visible(job, _principal(request)):
            return _json({"error": no_job(shell, job_id)}, 404)
        try:
            detail = job_detail(
                shell.shown(job), shell.clock(), _int(q, "task_limit"), _int(q, "task_offset")
            )
        except ViewRefused as e:
            return _json({"error": str(e)}, 400)
        return _json(as_dict(detail))

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.obs.metrics_text().encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.obs.ready()
        body = {
            "ready": ready,
            "serving": ready,
            "agents": len(self.obs.shell.scheduler.agents),
        }
        return _json(body, 200 if ready else 503)
