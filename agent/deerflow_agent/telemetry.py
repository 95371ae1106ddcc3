"""The agent's observability: a ``deerflow.execute`` span around every attempt's handler,
Prometheus metrics and health endpoints.

Traces: the assignment's ``trace_context`` names the controller's schedule span; the execute
span is its child (CONSUMER), from the handler's start to its result. The handler's
``TaskContext.trace_context`` then names the execute span, so a handler that calls a provider
can pass the context on (``traceparent`` header) or parent its own spans on it. Attributes:
``deerflow.job.id``, ``deerflow.task.id``, ``deerflow.handler``, ``deerflow.attempt``,
``deerflow.agent.id``, ``deerflow.outcome``, and what the handler reported of its provider
(``http.response.status_code``, tokens); an event ``rate_limited`` on a 429 (with the
Retry-After); status ERROR with the error's message when the attempt failed. Export follows the
``OTEL_*`` environment (see ``deerflow_common.otlp``); without an endpoint nothing is recorded.
Per attempt the hot path only formats the handler's ``traceparent`` (start) and appends a tuple
(end); spans are encoded on the loop's next turn, after the result left.

Metrics (``--metrics-port``): ``deerflow_agent_attempts_total{handler,outcome}``,
``deerflow_agent_run_seconds{handler}``, ``deerflow_agent_provider_responses_total{handler,
status}``, slots, running, queued, connected, draining, per-handler caps, process metrics.
``/healthz`` answers while the process runs; ``/readyz`` is 200 while the agent has a stream to
a controller and is not draining.
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil
from aiohttp import web

from deerflow_common import otlp, signals
from deerflow_common.prometheus import CONTENT_TYPE, Histogram, MetricsText, process_metrics

from .runtime import Attempt, AttemptObserver, Outcome

if TYPE_CHECKING:
    from .session import Agent

__all__ = ["AgentTelemetry"]

log = logging.getLogger(__name__)

SPAN_NAME = "deerflow.execute"
_HEAD = otlp.span_head(SPAN_NAME, otlp.KIND_CONSUMER)
_E = otlp.EVENT_ATTR
_task_attr = otlp.str_attr_encoder("deerflow.task.id")
_new_span_id = otlp.new_span_id
_getrandbits = random.getrandbits
_pack_q = struct.Struct("<Q").pack
_varint = otlp.varint
TRACEPARENT = otlp.TRACEPARENT
_CACHE_LIMIT = 4096
_SUCCEEDED_ATTR = otlp.attr_str("deerflow.outcome", "succeeded")


def _discard(span: bytes) -> None:
    """Where spans go when tracing is off (never called: no span is made then)."""


class _Span:
    """The execute span of one attempt while it runs (ids as OTLP bytes)."""

    __slots__ = ("parent_id", "sampled", "span_id", "trace_id")

    def __init__(
        self, trace_id: bytes, span_id: bytes, parent_id: bytes | None, sampled: bool
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled


class AgentTelemetry:
    """Traces and metrics of one agent. Use :attr:`observer` for the runtime (None when both
    are off: then nothing at all is done per attempt)."""

    def __init__(self, agent_id: str, sink: otlp.SpanSink | None, *, metrics: bool) -> None:
        self.agent_id = agent_id
        self.sink = sink
        self.metrics = metrics
        self.run: dict[str, Histogram] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.provider_responses: dict[tuple[str, str], int] = {}
        self._agent_attr = otlp.attr_str("deerflow.agent.id", agent_id)
        self._job_attrs: dict[str, bytes] = {}
        self._handler_attrs: dict[str, bytes] = {}
        self._attempt_attrs: dict[int, bytes] = {}
        self._outcome_attrs: dict[str, bytes] = {}
        self._ok_attrs: dict[tuple[str, str, int], bytes] = {}
        """(job, handler, attempt) -> the attributes of a successful attempt but its task id."""
        self._sink_emit: Callable[[bytes], None] = sink.emit if sink is not None else _discard
        self._ended: list[tuple[tuple[str, int], Outcome]] = []
        """(parent traceparent, span id) and outcome of attempts whose span is not encoded yet."""
        if sink is not None:
            sink.add_source(self._encode_ended)
        self._follow_parent = sink is not None and sink.sampling.follows_parent
        self._agent: Agent | None = None
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_env(cls, agent_id: str, *, metrics: bool) -> AgentTelemetry:
        sink = otlp.tracing_from_env(
            "deerflow-agent", "deerflow_agent", resource={"service.instance.id": agent_id}
        )
        return cls(agent_id, sink, metrics=metrics)

    @property
    def observer(self) -> AttemptObserver | None:
        return self if self.sink is not None or self.metrics else None

    # ------------------------------------------------------------------ AttemptObserver

    def on_start(self, a: Attempt) -> None:
        sink = self.sink
        if sink is None:
            return
        tc = a.trace_context
        header = tc.get(TRACEPARENT) if tc else None
        if (
            header is not None
            and len(header) == 55
            and header[:3] == "00-"
            and self._follow_parent
            and isinstance(tc, dict)
        ):
            # The common case, cheaply: a version-00 header from our controller, a sampler
            # that follows the parent's flag. Keep the parent's header and our id; the ids are
            # decoded (and validated) once, when the span is written.
            n = _getrandbits(63) | 1
            a.span = (header, n)
            tc[TRACEPARENT] = f"{header[:36]}{n:016x}{header[52:]}"  # the session's own dict
            return
        parent = otlp.parse_traceparent(header) if header else None
        span_id = _new_span_id()
        if parent is None:
            span = self._root(sink, span_id)
        else:
            sampled = sink.sampling.sampled(parent.trace_id, parent, SPAN_NAME)
            span = _Span(parent.trace_id, span_id, parent.span_id, sampled)
        a.span = span
        own = otlp.format_traceparent(span.trace_id, span_id, span.sampled)
        a.trace_context = {**(tc or {}), TRACEPARENT: own}

    @staticmethod
    def _root(sink: otlp.SpanSink, span_id: bytes) -> _Span:
        trace_id = otlp.new_trace_id()
        return _Span(trace_id, span_id, None, sink.sampling.sampled(trace_id, None, SPAN_NAME))

    def on_end(self, a: Attempt, outcome: Outcome) -> None:
        try:
            if self.metrics:
                self._count(outcome)
            span = a.span
            if self.sink is None or span is None:
                return
            if span.__class__ is tuple:
                if span[0][54] in "13579bdf":  # the parent's sampled flag
                    self._ended.append((span, outcome))
                    self.sink.defer()
            elif isinstance(span, _Span) and span.sampled:
                self._emit(span.trace_id, span.span_id, span.parent_id, outcome)
        except Exception:  # telemetry must never break reporting
            log.exception("recording attempt %r failed", a)

    def _encode_ended(self) -> None:
        """Encode the execute spans recorded by :meth:`on_end` since the last call (on the
        loop's next turn: the results have left by then). The common case, a successful
        attempt under our controller's span with nothing reported by a provider, is one join
        in this loop; everything but its ids, times and task id is encoded once per (job,
        handler, attempt)."""
        ended, self._ended = self._ended, []
        ok_attrs = self._ok_attrs
        emit = self._sink_emit
        fromhex = bytes.fromhex
        for (header, n), outcome in ended:
            if not outcome.ok or outcome.metadata:
                ids = fromhex(header[3:35] + header[36:52])
                self._emit(ids[:16], n.to_bytes(8, "big"), ids[16:], outcome)
                continue
            job_id, task_id, attempt = outcome.key
            key = (job_id, outcome.handler, attempt)
            shared = ok_attrs.get(key) or self._ok_shared(key)
            body = b"".join(
                (
                    b"\x0a\x10",
                    fromhex(header[3:35]),
                    b"\x12\x08",
                    n.to_bytes(8, "big"),
                    b"\x22\x08",
                    fromhex(header[36:52]),
                    _HEAD,
                    b"\x39",
                    _pack_q(int(outcome.started_at * 1e9)),
                    b"\x41",
                    _pack_q(int(outcome.finished_at * 1e9)),
                    _task_attr(task_id),
                    shared,
                )
            )
            emit(b"\x12" + _varint(len(body)) + body)

    def _ok_shared(self, key: tuple[str, str, int]) -> bytes:
        job_id, handler, attempt = key
        if len(self._ok_attrs) >= _CACHE_LIMIT:
            self._ok_attrs.clear()
        b = self._ok_attrs[key] = b"".join(
            (
                self._cached(self._job_attrs, "deerflow.job.id", job_id),
                self._cached(self._handler_attrs, "deerflow.handler", handler),
                self._cached(self._attempt_attrs, "deerflow.attempt", attempt),
                self._agent_attr,
                _SUCCEEDED_ATTR,
            )
        )
        return b

    # ------------------------------------------------------------------ recording

    def _outcome(self, outcome: Outcome) -> str:
        if outcome.ok:
            return "succeeded"
        if outcome.cancelled:
            return "cancelled"
        return outcome.error.kind.name.lower() if outcome.error is not None else "failed"

    def _count(self, outcome: Outcome) -> None:
        handler = outcome.handler
        hist = self.run.get(handler)
        if hist is None:
            hist = self.run[handler] = Histogram()
        hist.observe(max(0.0, outcome.finished_at - outcome.started_at))
        key = (handler, self._outcome(outcome))
        self.attempts[key] = self.attempts.get(key, 0) + 1
        status = outcome.metadata.get(signals.HTTP_STATUS) if outcome.metadata else None
        if status:
            skey = (handler, status)
            self.provider_responses[skey] = self.provider_responses.get(skey, 0) + 1

    def _cached(self, cache: dict[Any, bytes], key: str, value: str | int) -> bytes:
        b = cache.get(value)
        if b is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            b = otlp.attr_int(key, value) if isinstance(value, int) else otlp.attr_str(key, value)
            cache[value] = b
        return b

    def _emit(
        self, trace_id: bytes, span_id: bytes, parent_id: bytes | None, outcome: Outcome
    ) -> None:
        assert self.sink is not None
        job_id, task_id, attempt = outcome.key
        ok = outcome.ok
        fields = [
            b"\x0a\x10",
            trace_id,
            b"\x12\x08",
            span_id,
            b"\x22\x08" + parent_id if parent_id else b"",
            _HEAD,
            b"\x39",
            _pack_q(int(outcome.started_at * 1e9)),
            b"\x41",
            _pack_q(int(outcome.finished_at * 1e9)),
            self._job_attrs.get(job_id) or self._cached(self._job_attrs, "deerflow.job.id", job_id),
            _task_attr(task_id),
            self._handler_attrs.get(outcome.handler)
            or self._cached(self._handler_attrs, "deerflow.handler", outcome.handler),
            self._attempt_attrs.get(attempt)
            or self._cached(self._attempt_attrs, "deerflow.attempt", attempt),
            self._agent_attr,
            _SUCCEEDED_ATTR
            if ok
            else self._cached(self._outcome_attrs, "deerflow.outcome", self._outcome(outcome)),
        ]
        meta = outcome.metadata
        if meta:
            fields.append(self._provider_fields(meta, outcome.finished_at))
        error = outcome.error
        if error is not None and not ok:
            fields.append(otlp.attr_str("error.kind", error.kind.name))
            fields.append(otlp.attr_bool("error.retryable", error.retryable))
            fields.append(otlp.status(otlp.STATUS_ERROR, error.message[:1000]))
        body = b"".join(fields)
        self.sink.emit(b"\x12" + _varint(len(body)) + body)

    @staticmethod
    def _provider_fields(meta: Any, finished_at: float) -> bytes:
        out = b""
        status = signals.number(meta, signals.HTTP_STATUS)
        if status is not None:
            out += otlp.attr_int("http.response.status_code", int(status))
        tokens = signals.number(meta, signals.TOTAL_TOKENS)
        if tokens is not None:
            out += otlp.attr_float("deerflow.tokens", tokens)
        if status == 429:
            attrs = []
            retry_after = signals.number(meta, signals.RETRY_AFTER_S)
            if retry_after is not None:
                attrs.append(otlp.attr_float("retry_after_s", retry_after, _E))
            code = meta.get(signals.ERROR_CODE)
            if code:
                attrs.append(otlp.attr_str("error.code", code, _E))
            out += otlp.event("rate_limited", int(finished_at * 1e9), *attrs)
        return out

    # ------------------------------------------------------------------ HTTP

    async def serve_http(self, agent: Agent, host: str, port: int) -> int:
        """Serve /metrics, /healthz and /readyz for ``agent``; returns the bound port. Raises
        OSError when the port is taken."""
        self._agent = agent
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        return int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        """Stop serving HTTP and flush spans not yet exported (blocks up to 10 s: call last)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.sink is not None:
            await self.sink.shutdown()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        agent = self._agent
        ready = agent is not None and agent.connected and not agent.draining
        body = {
            "ready": ready,
            "connected": bool(agent and agent.connected),
            "draining": bool(agent and agent.draining),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    def render(self) -> str:
        out = MetricsText()
        agent = self._agent
        labels = {"agent": self.agent_id}
        if agent is not None:
            rt = agent.runtime
            out.gauge("deerflow_agent_slots", "Slots this agent offers.", [(labels, rt.slots)])
            out.gauge("deerflow_agent_running", "Slots taken by attempts.", [(labels, rt.running)])
            out.gauge(
                "deerflow_agent_queued", "Attempts received, not started.", [(labels, rt.queued)]
            )
            out.gauge(
                "deerflow_agent_connected",
                "1 while a stream to a controller is open.",
                [(labels, float(agent.connected))],
            )
            out.gauge(
                "deerflow_agent_draining", "1 while draining.", [(labels, float(agent.draining))]
            )
            out.gauge(
                "deerflow_agent_handler_slots",
                "Concurrent attempts allowed per handler.",
                [({**labels, "handler": h}, n) for h, n in sorted(rt.slot_caps().items())],
            )
            out.gauge(
                "deerflow_agent_handler_latency_seconds",
                "Recent mean run time per handler (what heartbeats report).",
                [({**labels, "handler": h}, v) for h, v in sorted(rt.latencies().items())],
            )
        out.counter(
            "deerflow_agent_attempts_total",
            "Attempts that ended, by handler and outcome.",
            [
                ({**labels, "handler": h, "outcome": o}, n)
                for (h, o), n in sorted(self.attempts.items())
            ],
        )
        out.counter(
            "deerflow_agent_provider_responses_total",
            "Provider HTTP statuses handlers reported (429 = rate-limited), by handler.",
            [
                ({**labels, "handler": h, "status": s}, n)
                for (h, s), n in sorted(self.provider_responses.items())
            ],
        )
        out.histogram(
            "deerflow_agent_run_seconds",
            "Handler run time per attempt, per handler.",
            "handler",
            self.run,
        )
        out.gauge(
            "deerflow_agent_memory_percent",
            "Machine memory in use.",
            [(labels, float(psutil.virtual_memory().percent))],
        )
        if self.sink is not None:
            out.counter(
                "deerflow_tracing_spans_exported_total",
                "Spans exported.",
                [(None, self.sink.exported)],
            )
            out.counter(
                "deerflow_tracing_spans_dropped_total",
                "Spans dropped because the export queue was full.",
                [(None, self.sink.dropped)],
            )
        process_metrics(out)
        return out.render()
