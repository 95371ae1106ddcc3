"""The agent's ``deerflow.execute`` span around every attempt's handler (see ``_telemetry`` for
what it carries), recorded cheaply on the hot path and encoded a block at a time just before an
export."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
from collections.abc import Mapping
from typing import Any

from deerflow_common import signals, tracing

from ._attempt import Attempt, Outcome, outcome_label

__all__ = ["SPAN_NAME", "ExecuteSpans"]

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


class ExecuteSpans:
    """The execute spans of one agent's attempts, emitted into ``sink``."""

    def __init__(self, agent_id: str, sink: tracing.SpanSink) -> None:
        self.sink = sink
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
        sink.add_source(self._encode_ended)
        # numpy (for encode_span_block) loads now, at start-up, not in the first export.
        from deerflow_common.tracing import encode_span_block  # noqa: F401

        self._follow_parent = sink.sampling.follows_parent

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

    def record(self, a: Attempt, outcome: Outcome) -> None:
        """Keep the attempt for :meth:`_sort_ended` at the end of this loop turn (two appends
        here: the attempts of a turn are then sorted in one tight loop)."""
        self._ended.append(a)
        self._ended_outcomes.append(outcome)
        if not self._sort_scheduled:
            self._sort_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self._sort_ended)
            except RuntimeError:  # no loop (a test driving the observer directly)
                self._sort_ended()

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
        if recorded:
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
            else self._cached(self._outcome_attrs, "deerflow.outcome", outcome_label(outcome)),
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
