"""The agent's observability: a ``deerflow.execute`` span around every attempt's handler,
Prometheus metrics and health endpoints.

Traces: the assignment's ``traceparent`` names the controller's schedule span; the execute
span is its child (CONSUMER), from the handler's start to its result. The handler's
``TaskContext.trace_context`` then names the execute span, so a handler that calls a provider
can pass the context on (``traceparent`` header) or parent its own spans on it. Attributes:
``deerflow.job.id``, ``deerflow.task.id``, ``deerflow.handler``, ``deerflow.attempt``,
``deerflow.agent.id``, ``deerflow.outcome``, and what the handler reported of its provider
(``http.response.status_code``, tokens); an event ``rate_limited`` on a 429 (with the
Retry-After); status ERROR with the error's message when the attempt failed. Export follows the
``OTEL_*`` environment (see ``deerflow_common.tracing``); without an endpoint nothing is
recorded.
Per attempt the hot path does nothing at the start (the execute span's id is drawn only if the
handler reads its context, or at the end) and two appends at the end; at the end of the loop
turn the attempts become plain values in per-(job, handler, attempt) lists, and the spans are
encoded a block at a time just before an export (``tracing.encode_span_block``).

Metrics (``--metrics-port``): ``deerflow_agent_attempts_total{handler,outcome}``,
``deerflow_agent_run_seconds{handler}``, ``deerflow_agent_provider_responses_total{handler,
status}``, slots, running, queued, connected, draining, per-handler caps, process metrics.
``/healthz`` answers while the process runs; ``/readyz`` is 200 while the agent has a stream to
a controller and is not draining.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psutil
from aiohttp import web

from deerflow_common import signals, tracing
from deerflow_common.prometheus import CONTENT_TYPE, Histogram, MetricsText, process_metrics

from .runtime import Attempt, AttemptObserver, Outcome

if TYPE_CHECKING:
    from .session import Agent

__all__ = ["AgentTelemetry"]

log = logging.getLogger(__name__)

SPAN_NAME = "deerflow.execute"
_HEAD = tracing.span_head(SPAN_NAME, tracing.KIND_CONSUMER)
_E = tracing.EVENT_ATTR
_task_attr = tracing.str_attr_encoder("deerflow.task.id")
_new_span_id = tracing.new_span_id
_getrandbits = random.getrandbits
_pack_q = struct.Struct("<Q").pack
_varint = tracing.varint
TRACEPARENT = tracing.TRACEPARENT
_CACHE_LIMIT = 4096
_SUCCEEDED_ATTR = tracing.attr_str("deerflow.outcome", "succeeded")


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


class _Group:
    """Successful attempts of one (job, handler, attempt), for :func:`encode_span_block`."""

    __slots__ = ("ends", "headers", "ids", "starts", "values")

    def __init__(self) -> None:
        self.headers: list[str] = []
        """The parent's traceparent (trace id and parent span id) per attempt."""
        self.ids: list[int] = []
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.values: list[str] = []


class AgentTelemetry:
    """Traces and metrics of one agent. Use :attr:`observer` for the runtime (None when both
    are off: then nothing at all is done per attempt)."""

    def __init__(self, agent_id: str, sink: tracing.SpanSink | None, *, metrics: bool) -> None:
        self.agent_id = agent_id
        self.sink = sink
        self.metrics = metrics
        self.run: dict[str, Histogram] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.provider_responses: dict[tuple[str, str], int] = {}
        self._agent_attr = tracing.attr_str("deerflow.agent.id", agent_id)
        self._job_attrs: dict[str, bytes] = {}
        self._handler_attrs: dict[str, bytes] = {}
        self._attempt_attrs: dict[int, bytes] = {}
        self._outcome_attrs: dict[str, bytes] = {}
        self._ok_attrs: dict[tuple[str, str, int], bytes] = {}
        """(job, handler, attempt) -> the attributes of a successful attempt but its task id."""
        self._ended: list[Attempt] = []
        self._ended_outcomes: list[Outcome] = []
        self._sort_scheduled = False
        self._groups: dict[tuple[str, str, int], _Group] = {}
        """Successful attempts per (job, handler, attempt) whose spans are not encoded yet."""
        if sink is not None:
            sink.add_source(self._encode_ended)
            # numpy (for encode_span_block) loads now, at start-up, not in the first export.
            from deerflow_common.tracing import encode_span_block  # noqa: F401
        self._follow_parent = sink is not None and sink.sampling.follows_parent
        self._agent: Agent | None = None
        self._runner: web.AppRunner | None = None

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

    def _parent_header(self, tc: Mapping[str, str] | None) -> str | None:
        """The parent's traceparent in the common case (version 00, as our controller writes
        it, and a sampler that follows the parent's flag), else None."""
        header = tc.get(TRACEPARENT) if tc else None
        if header is not None and len(header) == 55 and header[:3] == "00-" and self._follow_parent:
            return header
        return None

    def _span(self, a: Attempt) -> int | _Span:
        """The attempt's execute span, made on first use: in the common case only its id (the
        rest comes from the parent's header when the span is written)."""
        span = a.span
        if span is None:
            sink = self.sink
            assert sink is not None
            tc = a.trace_context
            if self._parent_header(tc) is not None:
                span = _getrandbits(63) | 1
            else:
                header = tc.get(TRACEPARENT) if tc else None
                parent = tracing.parse_traceparent(header) if header else None
                span_id = _new_span_id()
                if parent is None:
                    span = self._root(sink, span_id)
                else:
                    sampled = sink.sampling.sampled(parent.trace_id, parent, SPAN_NAME)
                    span = _Span(parent.trace_id, span_id, parent.span_id, sampled)
            a.span = span
        assert isinstance(span, int | _Span)
        return span

    def child_context(self, a: Attempt) -> Mapping[str, str] | None:
        """The context the handler sees: the parent's, with the execute span as the parent."""
        tc = a.trace_context
        if self.sink is None:
            return tc
        span = self._span(a)
        if isinstance(span, int):
            header = tc[TRACEPARENT] if tc else ""
            own = f"{header[:36]}{span:016x}{header[52:]}"
        else:
            own = tracing.format_traceparent(span.trace_id, span.span_id, span.sampled)
        return {**(tc or {}), TRACEPARENT: own}

    @staticmethod
    def _root(sink: tracing.SpanSink, span_id: bytes) -> _Span:
        trace_id = tracing.new_trace_id()
        return _Span(trace_id, span_id, None, sink.sampling.sampled(trace_id, None, SPAN_NAME))

    def on_end(self, a: Attempt, outcome: Outcome) -> None:
        """Count the outcome; keep the attempt for :meth:`_sort_ended` at the end of this loop
        turn (two appends here: the attempts of a turn are then sorted in one tight loop)."""
        try:
            if self.metrics:
                self._count(outcome)
            if self.sink is None:
                return
            self._ended.append(a)
            self._ended_outcomes.append(outcome)
            if not self._sort_scheduled:
                self._sort_scheduled = True
                try:
                    asyncio.get_running_loop().call_soon(self._sort_ended)
                except RuntimeError:  # no loop (a test driving the observer directly)
                    self._sort_ended()
        except Exception:  # telemetry must never break reporting
            log.exception("recording attempt %r failed", a)

    def _sort_ended(self) -> None:
        """Turn this loop turn's ended attempts into span records (the objects themselves are
        not kept: nothing outlives this call but numbers and strings). One loop for the turn:
        the common case (a successful attempt under a version-00 parent that was sampled, a
        sampler that follows the parent, nothing reported by a provider) is inline; a span id
        not yet drawn is left 0 and drawn in bulk when encoding."""
        self._sort_scheduled = False
        attempts, self._ended = self._ended, []
        outcomes, self._ended_outcomes = self._ended_outcomes, []
        groups = self._groups
        follow = self._follow_parent
        recorded = 0
        for a, outcome in zip(attempts, outcomes, strict=True):
            try:
                span = a.span
                if span is None or span.__class__ is int:
                    tc = a.trace_context
                    header = tc.get(TRACEPARENT) if tc else None
                    if header is not None and len(header) == 55 and header[:3] == "00-" and follow:
                        if header[54] not in "13579bdf":  # the parent was not sampled
                            continue
                        n = span or 0
                        if outcome.ok and not outcome.metadata:
                            job_id, task_id, attempt = outcome.key
                            key = (job_id, outcome.handler, attempt)
                            group = groups.get(key)
                            if group is None:
                                group = groups[key] = _Group()
                            group.headers.append(header)
                            group.ids.append(n)
                            group.starts.append(outcome.started_at)
                            group.ends.append(outcome.finished_at)
                            group.values.append(task_id)
                            recorded += 1
                        else:
                            ids = bytes.fromhex(header[3:35] + header[36:52])
                            n = n or _getrandbits(63) | 1
                            self._emit(ids[:16], n.to_bytes(8, "big"), ids[16:], outcome)
                        continue
                    span = self._span(a)
                if isinstance(span, _Span) and span.sampled:
                    self._emit(span.trace_id, span.span_id, span.parent_id, outcome)
            except Exception:  # a span lost, never the agent
                log.exception("recording attempt %r failed", a)
        if recorded and self.sink is not None:
            self.sink.defer(recorded)

    def _encode_ended(self) -> None:
        """Encode the execute spans recorded since the last call (just before an export): the
        common case, a successful attempt under our controller's span with nothing reported by
        a provider, a block per (job, handler, attempt) (:func:`encode_span_block`)."""
        import numpy as np  # only a tracing agent loads numpy (0.13 s, in __init__)

        from deerflow_common.tracing import encode_span_block

        if self._ended:
            self._sort_ended()
        groups, self._groups = self._groups, {}
        assert self.sink is not None
        emit_block = self.sink.emit_block
        fromhex = bytes.fromhex
        for key, group in groups.items():
            headers = group.headers
            shared = _HEAD + (self._ok_attrs.get(key) or self._ok_shared(key))
            ids = np.array(group.ids, dtype=">u8")
            unset = ids == 0  # drawn here, in bulk (a handler that read its context drew one)
            if unset.any():
                drawn = np.frombuffer(os.urandom(8 * int(unset.sum())), dtype=">u8") | 1
                ids[unset] = drawn
            traces = [h[3:35] for h in headers]
            if traces.count(traces[0]) == len(traces):  # one trace (a job's submit): once
                del traces[1:]
            for data, count in encode_span_block(
                trace_ids=fromhex("".join(traces)),
                span_ids=ids.tobytes(),
                parent_ids=fromhex("".join([h[36:52] for h in headers])),
                starts=group.starts,
                ends=group.ends,
                values=group.values,
                value_key="deerflow.task.id",
                shared=shared,
            ):
                emit_block(data, count)

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
            b = (
                tracing.attr_int(key, value)
                if isinstance(value, int)
                else tracing.attr_str(key, value)
            )
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
            fields.append(tracing.attr_str("error.kind", error.kind.name))
            fields.append(tracing.attr_bool("error.retryable", error.retryable))
            fields.append(tracing.status(tracing.STATUS_ERROR, error.message[:1000]))
        body = b"".join(fields)
        self.sink.emit(b"\x12" + _varint(len(body)) + body)

    @staticmethod
    def _provider_fields(meta: Any, finished_at: float) -> bytes:
        out = b""
        status = signals.number(meta, signals.HTTP_STATUS)
        if status is not None:
            out += tracing.attr_int("http.response.status_code", int(status))
        tokens = signals.number(meta, signals.TOTAL_TOKENS)
        if tokens is not None:
            out += tracing.attr_float("deerflow.tokens", tokens)
        if status == 429:
            attrs = []
            retry_after = signals.number(meta, signals.RETRY_AFTER_S)
            if retry_after is not None:
                attrs.append(tracing.attr_float("retry_after_s", retry_after, _E))
            code = meta.get(signals.ERROR_CODE)
            if code:
                attrs.append(tracing.attr_str("error.code", code, _E))
            out += tracing.event("rate_limited", int(finished_at * 1e9), *attrs)
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
