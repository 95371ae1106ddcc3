"""The agent's observability, one observer of the runtime: a ``deerflow.execute`` span around
every attempt's handler (``_spans``), Prometheus metrics (``_metrics``) and health endpoints
(``_health``).

Traces: the assignment's ``traceparent`` names the controller's schedule span; the execute
span is its child (CONSUMER), from the handler's start to its result. The handler's
``TaskContext.trace_context`` then names the execute span, so a handler that calls a provider
can pass the context on (``traceparent`` header) or parent its own spans on it. Attributes:
``deerflow.job.id``, ``deerflow.task.id``, ``deerflow.handler``, ``deerflow.attempt``,
``deerflow.agent.id``, ``deerflow.outcome``, and what the handler reported of its provider
(``http.response.status_code``, tokens); an event ``rate_limited`` on a 429 (with the
Retry-After); status ERROR with the error's message when the attempt failed. Export follows the
``OTEL_*`` environment (see ``deerflow_common.tracing``); without an endpoint nothing is
recorded. Per attempt the hot path does nothing at the start (the execute span's id is drawn
only if the handler reads its context, or at the end) and two appends at the end; at the end of
the loop turn the attempts become plain values in per-(job, handler, attempt) lists, and the
spans are encoded a block at a time just before an export (``tracing.encode_span_block``).

Metrics (``--metrics-port``): ``deerflow_agent_attempts_total{handler,outcome}``,
``deerflow_agent_run_seconds{handler}``, ``deerflow_agent_provider_responses_total{handler,
status}``, slots, running, queued, connected, draining, per-handler caps, process metrics.
``/healthz`` answers while the process runs; ``/readyz`` is 200 while the agent has a stream to
a controller and is not draining.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING

from deerflow_common import tracing

from ._attempt import Attempt, AttemptObserver, Outcome
from ._metrics import AttemptMetrics
from ._spans import ExecuteSpans

if TYPE_CHECKING:
    from ._health import HealthServer
    from ._session import Agent

__all__ = ["AgentTelemetry"]

log = logging.getLogger(__name__)


class AgentTelemetry:
    """Traces and metrics of one agent. Use :attr:`observer` for the runtime (None when both
    are off: then nothing at all is done per attempt)."""

    def __init__(self, agent_id: str, sink: tracing.SpanSink | None, *, metrics: bool) -> None:
        self.agent_id = agent_id
        self.sink = sink
        self.metrics = metrics
        self.counts = AttemptMetrics()
        self._spans = ExecuteSpans(agent_id, sink) if sink is not None else None
        self._agent: Agent | None = None
        self._http: HealthServer | None = None

    @classmethod
    def from_env(cls, agent_id: str, *, metrics: bool) -> AgentTelemetry:
        sink = tracing.tracing_from_env(
            "deerflow-agent", "deerflow_agent", resource={"service.instance.id": agent_id}
        )
        return cls(agent_id, sink, metrics=metrics)

    @property
    def observer(self) -> AttemptObserver | None:
        return self if self.sink is not None or self.metrics else None

    # ------------------------------------------------------------------ AttemptObserver

    def on_start(self, a: Attempt) -> None:
        """Nothing: the execute span's id is drawn when the handler reads its trace context
        (:meth:`child_context`) or when the attempt ends, whichever comes first."""

    def child_context(self, a: Attempt) -> Mapping[str, str] | None:
        """The context the handler sees: the parent's, with the execute span as the parent."""
        spans = self._spans
        return a.trace_context if spans is None else spans.child_context(a)

    def on_end(self, a: Attempt, outcome: Outcome) -> None:
        """Count the outcome and record the attempt's span."""
        try:
            if self.metrics:
                self.counts.count(outcome)
            if self._spans is not None:
                self._spans.record(a, outcome)
        except Exception:  # telemetry must never break reporting
            log.exception("recording attempt %r failed", a)

    # ------------------------------------------------------------------ HTTP

    async def serve_http(
        self, agent: Agent, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Serve /metrics, /healthz and /readyz for ``agent`` (over HTTPS with
        ``ssl_context``); returns the bound port. Raises OSError when the port is taken."""
        from ._health import HealthServer  # aiohttp's server: only with --metrics-port

        self._agent = agent
        http = HealthServer(agent, self.render)
        bound = await http.start(host, port, ssl_context)
        self._http = http
        return bound

    async def stop(self) -> None:
        """Stop serving HTTP and flush spans not yet exported (blocks up to 10 s: call last)."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self.sink is not None:
            await self.sink.shutdown()

    def render(self) -> str:
        return self.counts.render(self.agent_id, self._agent, self.sink)
