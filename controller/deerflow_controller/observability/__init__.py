"""Observability of the controller: a trace for every task, Prometheus metrics, a live dashboard,
health endpoints and optimisation suggestions.

Everything hangs off one interceptor on the shell (:class:`EventTap`), which reads the core's
job event logs; the core itself knows nothing of it. Costs nothing when off: without an OTLP
endpoint in the environment no tracer exists, and without an HTTP port no metrics are kept.

    obs = Observability.from_env(shell)       # tracing from OTEL_* variables
    port = await obs.serve_http("127.0.0.1", 7401, ready=lambda: controller.serving)
    ...
    await obs.stop()                          # HTTP off, spans flushed
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deerflow_common.tracing import SpanSink, tracing_from_env
from deerflow_controller.observability.metrics import TaskMetrics, render
from deerflow_controller.observability.stats import StatsHistory, snapshot
from deerflow_controller.observability.suggestions import Suggestion, suggest
from deerflow_controller.observability.tap import EventTap
from deerflow_controller.observability.tracing import TaskTracer
from deerflow_controller.service.credentials import Credentials
from deerflow_controller.service.shell import Shell

if TYPE_CHECKING:
    from deerflow_controller.observability.http import HttpServer
    from deerflow_controller.service.tuner_loop import TunerLoop

__all__ = [
    "DEFAULT_HTTP_PORT",
    "EventTap",
    "HttpServer",
    "Observability",
    "StatsHistory",
    "Suggestion",
    "TaskMetrics",
    "TaskTracer",
    "suggest",
]

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 7401


class Observability:
    """The controller's metrics, traces, stats history and HTTP server, attached to its shell.

    Attach before the controller accepts work (the tap must see every event from the first)."""

    def __init__(self, shell: Shell, sink: SpanSink | None = None) -> None:
        self.shell = shell
        self.sink = sink
        self.tracer = TaskTracer(sink, shell.clock) if sink is not None else None
        self.metrics: TaskMetrics | None = None
        self.tap: EventTap | None = None
        self.history = StatsHistory(shell)
        self.http: HttpServer | None = None
        self.ready: Callable[[], bool] = lambda: True
        self.tuner: TunerLoop | None = None
        """The tuner's loop, when it runs: its state and history join the snapshot."""
        self.credentials: Credentials | None = None
        """With ``--auth-file``: the HTTP side asks for a bearer token (see ``http.py``)."""
        if self.tracer is not None:
            self._attach()

    @classmethod
    def from_env(cls, shell: Shell) -> Observability:
        """Tracing as the ``OTEL_*`` environment asks (off without an OTLP endpoint)."""
        sink = tracing_from_env(
            "deerflow-controller",
            "deerflow_controller",
            resource={"service.instance.id": shell.config.controller_id},
        )
        return cls(shell, sink)

    def _attach(self) -> None:
        if self.tap is None:
            self.tap = EventTap(self.shell.scheduler, self.metrics, self.tracer)
            self.shell.interceptors.append(self.tap)
        else:
            self.tap.metrics = self.metrics
            if self.metrics is not None:
                self.metrics.waiting_ages = self.tap.waiting_ages

    def enable_metrics(self) -> TaskMetrics:
        if self.metrics is None:
            self.metrics = TaskMetrics()
            self._attach()
        return self.metrics

    async def serve_http(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> int:
        """Keep metrics and serve the HTTP endpoints on ``host:port`` (0 picks a free port),
        over HTTPS with ``ssl_context``; returns the bound port. Raises OSError when the port is
        taken."""
        # aiohttp's server is loaded here: a controller without an HTTP port never loads it.
        from deerflow_controller.observability.http import HttpServer

        if ready is not None:
            self.ready = ready
        self.enable_metrics()
        server = HttpServer(self)
        bound = await server.start(host, port, ssl_context)
        self.http = server
        self.history.start()
        return bound

    def snapshot(self) -> dict[str, Any]:
        tuner = self.tuner.summary() if self.tuner is not None else None
        return snapshot(
            self.shell, self.metrics, self.history, self.sink, serving=self.ready(), tuner=tuner
        )

    def metrics_text(self) -> str:
        return render(self.shell, self.enable_metrics(), self.sink)

    async def stop(self) -> None:
        """Stop serving HTTP and flush the spans not yet exported (waits up to 10 s)."""
        await self.history.stop()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.sink is not None:
            await self.sink.shutdown()
