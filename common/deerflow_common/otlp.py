"""Spans of the task path, encoded straight to OTLP protobuf bytes and exported in batches by
the OpenTelemetry SDK's own OTLP/gRPC exporter.

Both daemons record one span per task attempt (the controller's wait-and-dispatch, the agent's
execution). The SDK's spans are too dear for that. Measured on the 2-core machine (Python
3.11, SDK 1.45.2, five attributes, BatchSpanProcessor): creating and ending a span costs about
54 us and ``encode_spans`` about 55 us more, against about 90 us of CPU for a whole no-op task
across the client, controller and agents: two SDK spans per task would more than double it. Here
the hot path records only what a span needs; spans are encoded just before an export, those of
one shape a block at a time with numpy (``span_block``, about 0.5-1 us a span), any other by one
``bytes`` join of pre-encoded protobuf fields (2-4 us); batches go through the SDK's
``OTLPSpanExporter`` in a worker thread, so every ``OTEL_EXPORTER_OTLP_*`` setting (endpoint,
headers, TLS, compression, timeout, retries) applies and a backend cannot tell the difference.

Configuration is the standard environment (:func:`tracing_from_env`):

- nothing is exported unless ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; ``OTEL_SDK_DISABLED=true`` or
  ``OTEL_TRACES_EXPORTER=none`` turn it off; only OTLP over gRPC is spoken;
- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` name the resource;
- ``OTEL_TRACES_SAMPLER`` / ``_ARG`` decide (parent-based samplers follow the W3C sampled flag);
- ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` and
  ``OTEL_BSP_EXPORT_TIMEOUT`` size the batching as they do for the SDK's batch processor.

When tracing is on, an SDK ``TracerProvider`` with the same resource and sampler is also
installed globally, so spans that plugin code creates through the OpenTelemetry API are
exported too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .trace_context import TRACEPARENT as TRACEPARENT

log = logging.getLogger(__name__)

__all__ = [
    "KIND_CONSUMER",
    "KIND_INTERNAL",
    "KIND_PRODUCER",
    "STATUS_ERROR",
    "STATUS_OK",
    "Sampling",
    "SpanSink",
    "TraceParent",
    "attr_float",
    "attr_int",
    "attr_str",
    "attr_strs",
    "encode_span",
    "event",
    "format_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "span_head",
    "status",
    "str_attr_encoder",
    "tracing_enabled",
    "tracing_from_env",
    "varint",
]

# --------------------------------------------------------------------------- W3C trace context


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed W3C ``traceparent``: the ids as raw bytes, as OTLP carries them."""

    trace_id: bytes
    span_id: bytes
    sampled: bool


def parse_traceparent(value: str) -> TraceParent | None:
    """``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``; None when malformed or all-zero
    (an invalid parent is ignored, as the W3C spec says)."""
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if value[:2] == "ff" or (value[:2] == "00" and len(value) != 55):
        return None
    try:
        trace_id = bytes.fromhex(value[3:35])
        span_id = bytes.fromhex(value[36:52])
        flags = int(value[53:55], 16)
    except ValueError:
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, bool(flags & 1))


def format_traceparent(trace_id: bytes, span_id: bytes, sampled: bool) -> str:
    return f"00-{trace_id.hex()}-{span_id.hex()}-{'01' if sampled else '00'}"


_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_getrandbits = random.getrandbits


def new_trace_id() -> bytes:
    return (_getrandbits(127) | 1).to_bytes(16, "big")


def new_span_id() -> bytes:
    return (_getrandbits(63) | 1).to_bytes(8, "big")


# --------------------------------------------------------------------------- protobuf encoding
# Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common.proto. Each
# helper returns a complete field (tag + length + body), so a span is a join of fields.

KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3
KIND_PRODUCER = 4
KIND_CONSUMER = 5
STATUS_OK = 1
STATUS_ERROR = 2

_SPAN_ATTR = 0x4A  # Span.attributes = 9
_EVENT_ATTR = 0x1A  # Span.Event.attributes = 3
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint_slow(n) for n in range(1 << 12)]


def varint(n: int) -> bytes:
    """A protobuf varint (non-negative ``n``)."""
    return _VARINTS[n] if n < 4096 else _varint_slow(n)


_varint = varint


def _field(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(body)) + body


_KEYS: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    k = _KEYS.get(key)
    if k is None:
        k = _KEYS[key] = _field(0x0A, key.encode())
    return k


def _kv(key: str, any_value: bytes, tag: int) -> bytes:
    body = _key(key) + b"\x12" + _varint(len(any_value)) + any_value
    return bytes((tag,)) + _varint(len(body)) + body


def attr_str(key: str, value: str, tag: int = _SPAN_ATTR) -> bytes:
    v = value.encode()
    return _kv(key, b"\x0a" + _varint(len(v)) + v, tag)


def str_attr_encoder(key: str, tag: int = _SPAN_ATTR) -> Callable[[str], bytes]:
    """A fast :func:`attr_str` for one key, for values that change with every span."""
    kf = _key(key)
    k_len = len(kf)
    tag_b = bytes((tag,))
    varints = _VARINTS

    def encode(value: str) -> bytes:
        v = value.encode()
        n = len(v)
        if n + k_len < 120:  # every length fits in one byte
            return b"".join(
                (tag_b, varints[k_len + n + 4], kf, b"\x12", varints[n + 2], b"\x0a", varints[n], v)
            )
        return attr_str(key, value, tag)

    return encode


def attr_int(key: str, value: int, tag: int = _SPAN_ATTR) -> bytes:
    return _kv(key, b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF), tag)


def attr_float(key: str, value: float, tag: int = _SPAN_ATTR) -> bytes:
    return _kv(key, b"\x21" + _pack_d(value), tag)


def attr_bool(key: str, value: bool, tag: int = _SPAN_ATTR) -> bytes:
    return _kv(key, b"\x10\x01" if value else b"\x10\x00", tag)


def attr_strs(key: str, values: Iterable[str], tag: int = _SPAN_ATTR) -> bytes:
    items = b"".join(_field(0x0A, _field(0x0A, v.encode())) for v in values)
    return _kv(key, _field(0x2A, items), tag)


def event(name: str, time_ns: int, *attrs: bytes) -> bytes:
    """A span event; ``attrs`` are built with ``tag=EVENT_ATTR``."""
    return _field(0x5A, b"\x09" + _pack_q(time_ns) + _field(0x12, name.encode()) + b"".join(attrs))


EVENT_ATTR = _EVENT_ATTR


def status(code: int, message: str = "") -> bytes:
    body = (_field(0x12, message.encode()) if message else b"") + b"\x18" + _varint(code)
    return _field(0x7A, body)


def span_head(name: str, kind: int) -> bytes:
    """The name and kind fields, encoded once per kind of span."""
    return _field(0x2A, name.encode()) + b"\x30" + _varint(kind)


def encode_span(
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes | None,
    head: bytes,
    start_ns: int,
    end_ns: int,
    fields: bytes,
) -> bytes:
    """One span, ready to join into ``ScopeSpans.spans``. ``fields`` are attributes, events and
    status, already encoded."""
    body = b"".join(
        (
            b"\x0a\x10",
            trace_id,
            b"\x12\x08",
            span_id,
            b"\x22\x08" + parent_id if parent_id else b"",
            head,
            b"\x39",
            _pack_q(start_ns),
            b"\x41",
            _pack_q(end_ns),
            fields,
        )
    )
    return b"\x12" + _varint(len(body)) + body


def _any_value(value: object) -> bytes:
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    return _field(0x0A, str(value).encode())


def _resource_field(attributes: Mapping[str, object]) -> bytes:
    """``ResourceSpans.resource`` (field 1) for the given resource attributes."""
    body = b"".join(_kv(k, _any_value(v), 0x0A) for k, v in attributes.items())
    return _field(0x0A, body)


def _scope_field(name: str, version: str) -> bytes:
    """``ScopeSpans.scope`` (field 1)."""
    return _field(0x0A, _field(0x0A, name.encode()) + _field(0x12, version.encode()))


def export_request(resource: bytes, scope: bytes, spans: Sequence[bytes]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` of one resource and one scope: the lengths
    first, then one join (the spans, a megabyte per request, are copied once)."""
    scope_spans_len = len(scope) + sum(map(len, spans))
    scope_head = b"\x12" + _varint(scope_spans_len)
    resource_spans_len = len(resource) + len(scope_head) + scope_spans_len
    head = b"\x0a" + _varint(resource_spans_len) + resource + scope_head + scope
    return b"".join([head, *spans])


# --------------------------------------------------------------------------- sampling


class Sampling:
    """The decision for a span whose parent arrived over the wire (or that has none).

    Parent-based samplers (the default, ``parentbased_always_on``) follow the parent's sampled
    flag at no cost; a span without a parent, or any other sampler, asks the configured SDK
    sampler with the trace id, so ``traceidratio`` agrees across processes."""

    def __init__(self, sampler: Any) -> None:
        from opentelemetry.sdk.trace.sampling import ParentBased

        self._sampler = sampler
        self.follows_parent = isinstance(sampler, ParentBased)

    def sampled(self, trace_id: bytes, parent: TraceParent | None, name: str) -> bool:
        if parent is not None and self.follows_parent:
            return parent.sampled
        result = self._sampler.should_sample(None, int.from_bytes(trace_id, "big"), name)
        return bool(result.decision.is_sampled())


# --------------------------------------------------------------------------- export


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """The SDK batch processor's settings, read from the same variables."""

    schedule_delay_s: float = 5.0
    max_queue: int = 2048
    max_batch: int = 512
    export_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BatchSettings:
        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                log.warning("ignoring %s=%r: not a number", name, raw)
                return default
            return value if value > 0 else default

        max_queue = int(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048))
        return cls(
            schedule_delay_s=number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
            max_queue=max_queue,
            max_batch=min(max_queue, int(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))),
            export_timeout_s=number("OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000,
        )


MAX_REQUEST_BYTES = 3 << 20
"""A request stays under gRPC's default 4 MiB message limit, which collectors keep."""


class _Batch:
    """A serialized ``ExportTraceServiceRequest`` and how many spans it holds."""

    __slots__ = ("request", "spans")

    def __init__(self, request: bytes, spans: int) -> None:
        self.request = request
        self.spans = spans


def _exporter_class() -> type[Any]:
    """The SDK's OTLP/gRPC span exporter, fed requests we encoded ourselves.

    Everything but the encoding is the SDK's: it reads every ``OTEL_EXPORTER_OTLP_*`` setting
    (endpoint, TLS and client certificates or a credential provider, headers, compression,
    timeout, retryable codes), opens the channel, retries with backoff and the collector's
    RetryInfo, reconnects on UNAVAILABLE, and counts its exports. Only its encoder
    (``_translate_data``, the per-signal hook each OTLP exporter implements) is replaced: it
    hands over our bytes as the unknown fields of an empty message, which protobuf writes back
    byte for byte (0.1 us a span, where parsing them into an ``ExportTraceServiceRequest`` and
    serializing again costs 2.5-4 us, and ``encode_spans`` about 55 us). Should a protobuf
    runtime refuse that, the request is parsed instead (checked once, here)."""
    from google.protobuf.empty_pb2 import Empty
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    probe = export_request(_resource_field({"probe": 1}), _scope_field("probe", "1"), [])
    try:
        raw_ok = ExportTraceServiceRequest.SerializeToString(Empty.FromString(probe)) == probe
    except TypeError:
        raw_ok = False
    message = Empty if raw_ok else ExportTraceServiceRequest

    class PreEncodedSpanExporter(OTLPSpanExporter):
        def _translate_data(self, data: Any) -> Any:
            return message.FromString(data.request)

        def _count_data(self, data: Any) -> int:
            return int(data.spans)

    return PreEncodedSpanExporter


def _endpoint_from_env() -> str:
    """For log messages only (the exporter decides where it connects)."""
    return (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


class SpanSink:
    """A bounded queue of encoded spans, exported in batches as the SDK's batch processor does.

    :meth:`emit` never blocks: it appends to a deque (spans beyond ``max_queue`` are dropped and
    counted, with one warning per minute). Producers may record cheaply and encode later
    (:meth:`add_source`, :meth:`defer`). A task on the daemon's loop (started by the first
    :meth:`emit` or :meth:`defer`) exports whenever ``max_batch`` spans are waiting (queued or
    recorded) or ``schedule_delay_s`` has passed, one request at a time, each through the SDK
    exporter in a worker thread (which retries transient errors within its timeout).
    :meth:`flush` exports what is queued; :meth:`shutdown` flushes and shuts the exporter down.
    """

    def __init__(
        self,
        exporter: Any,
        resource: Mapping[str, object],
        scope: tuple[str, str],
        settings: BatchSettings,
        sampling: Sampling,
    ) -> None:
        self.exporter = exporter
        """An SDK ``SpanExporter`` whose ``export`` takes a :class:`_Batch` (blocking: it runs
        in a worker thread, one request at a time)."""
        self.endpoint = _endpoint_from_env()
        self.sampling = sampling
        self.settings = settings
        self.resource_attributes = dict(resource)
        self._resource = _resource_field(resource)
        self._scope = _scope_field(*scope)
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        """(encoded spans, how many) chunks: one span, or a block of equal-sized spans."""
        self._queued = 0
        self._max_queue = settings.max_queue
        self._max_batch = settings.max_batch
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()
        self._warned_at = 0.0
        self.exported = 0
        self.dropped = 0
        self.failed = 0
        self.provider: Any = None
        """The SDK TracerProvider installed beside this sink, if any (shut down with it)."""
        self._sources: list[Callable[[], None]] = []
        self._recorded = 0

    # Deferred encoding. A daemon's hot path only records what a span needs (the tasks of an
    # assignment message, an attempt's outcome); the spans are encoded just before an export,
    # a batch at a time, after the messages that carried the work have long left: tracing adds
    # no latency to a dispatch or a result, and spans of one shape are encoded together
    # (``deerflow_common.span_block``: about 0.5 us a span where one by one costs 3 us).

    def add_source(self, drain: Callable[[], None]) -> None:
        """Register ``drain``: it encodes what its producer recorded and emits the spans.
        Called before every export, so nothing recorded is left out."""
        self._sources.append(drain)

    def defer(self, spans: int = 1) -> None:
        """A producer recorded ``spans`` spans to encode later: the export task wakes when a
        batch's worth is waiting. A producer that outpaces the exports is drained at once, so
        records never outgrow the queue (what does not fit is dropped and counted)."""
        if self._wake is None:
            self.start()
        self._recorded += spans
        waiting = self._recorded + self._queued
        if waiting >= self._max_batch and self._wake is not None:
            self._wake.set()
        if self._recorded > self._max_queue:
            self._drain()

    def _drain(self) -> None:
        self._recorded = 0
        for drain in self._sources:
            try:
                drain()
            except Exception:  # a span lost, never the daemon
                log.exception("encoding spans failed")

    def start(self) -> None:
        """Start exporting from the running event loop (idempotent; without a running loop, as
        in a test feeding a tracer directly, spans wait for :meth:`flush`)."""
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())

    def emit(self, span: bytes) -> None:
        """Queue one encoded span (from the event loop's thread)."""
        if self._wake is None:
            self.start()
        if self._queued >= self._max_queue:
            self._drop()
            return
        self._queue.append((span, 1))
        self._queued += 1
        if self._queued == self._max_batch and self._wake is not None:
            self._wake.set()

    def emit_many(self, spans: list[bytes]) -> None:
        """Queue encoded spans, as :meth:`emit` does one."""
        for span in spans:
            self.emit(span)

    def emit_block(self, block: bytes, count: int) -> None:
        """Queue ``count`` spans of equal size encoded back to back (a
        :func:`deerflow_common.span_block.encode_span_block` block); split into batches here."""
        if count <= 0:
            return
        if self._wake is None:
            self.start()
        room = max(self._max_queue - self._queued, 0)
        size = len(block) // count
        if room < count:
            self._drop(count - room)
            count = room
            block = block[: size * count]
        step = max(1, min(self._max_batch, (MAX_REQUEST_BYTES // 2) // max(size, 1)))
        for i in range(0, count, step):
            k = min(step, count - i)
            self._queue.append((block[i * size : (i + k) * size] if count > step else block, k))
        self._queued += count
        if self._queued >= self._max_batch and self._wake is not None:
            self._wake.set()

    def _drop(self, n: int = 1) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "span queue full (%d): dropping spans (%d so far); raise OTEL_BSP_MAX_QUEUE_SIZE "
                "or lower OTEL_BSP_SCHEDULE_DELAY",
                self._max_queue,
                self.dropped,
            )

    @property
    def queued(self) -> int:
        """Spans encoded and waiting for export (recorded ones are counted once encoded)."""
        return self._queued

    async def flush(self) -> None:
        """Export everything recorded and queued now (returns when sent, or given up on)."""
        await self._export_queued()

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush (for at most ``timeout_s``: a daemon must exit promptly even when the
        collector is down), stop the export task, close the channel."""
        try:
            await asyncio.wait_for(self.flush(), min(timeout_s, self.settings.export_timeout_s))
        except TimeoutError:
            log.warning("gave up exporting %d spans at shutdown", self._queued)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.exporter.shutdown)
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)

    async def _run(self) -> None:
        assert self._wake is not None
        delay = self.settings.schedule_delay_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            try:
                await self._export_queued()
            except Exception:  # never let the export task die
                log.exception("exporting spans failed")

    async def _export_queued(self) -> None:
        async with self._sending:
            self._drain()
            queue = self._queue
            while queue:
                chunks: list[bytes] = []
                spans = 0
                size = 0
                pop = queue.popleft
                while queue and spans < self._max_batch and size < MAX_REQUEST_BYTES:
                    if chunks and (
                        spans + queue[0][1] > self._max_batch
                        or size + len(queue[0][0]) > MAX_REQUEST_BYTES
                    ):
                        break
                    chunk, count = pop()
                    size += len(chunk)
                    spans += count
                    chunks.append(chunk)
                self._queued -= spans
                request = export_request(self._resource, self._scope, chunks)
                ok = await self._send(_Batch(request, spans))
                if ok:
                    self.exported += spans
                else:
                    self.failed += spans
                if not queue and self._recorded >= self._max_batch:
                    self._drain()  # recorded while this request was out

    async def _send(self, batch: _Batch) -> bool:
        """One export in a worker thread (the SDK exporter retries transient errors within its
        timeout and logs what fails)."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        result = await asyncio.to_thread(self.exporter.export, batch)
        return bool(result == SpanExportResult.SUCCESS)


# --------------------------------------------------------------------------- configuration


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("deerflow-parallel")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """True when the environment asks for OTLP trace export."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        if exporters - {"none", ""}:
            log.warning(
                "OTEL_TRACES_EXPORTER=%s: only otlp is supported here; not exporting traces",
                env.get("OTEL_TRACES_EXPORTER"),
            )
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def tracing_from_env(
    service_name: str,
    scope: str,
    *,
    resource: Mapping[str, str] | None = None,
    install_sdk: bool = True,
) -> SpanSink | None:
    """A :class:`SpanSink` configured from ``OTEL_*`` variables, or None when tracing is off
    (then nothing is imported from the SDK and nothing is installed: the API stays a no-op).

    ``service_name`` is the default for ``service.name`` (``OTEL_SERVICE_NAME`` wins);
    ``resource`` adds attributes such as ``service.instance.id``. With ``install_sdk`` an SDK
    TracerProvider is installed globally for spans made through the OpenTelemetry API."""
    if not tracing_enabled():
        return None
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol.strip().lower() not in ("grpc", ""):
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: exporting over grpc instead", protocol)
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, str] = dict(resource or {})
    named_in_env = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named_in_env:
        attributes["service.name"] = service_name
    res = Resource.create(attributes)
    provider = TracerProvider(resource=res)
    if install_sdk:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    sink = SpanSink(
        _exporter_class()(),
        dict(res.attributes),
        (scope, _version()),
        BatchSettings.from_env(os.environ),
        Sampling(provider.sampler),
    )
    sink.provider = provider if install_sdk else None
    log.info(
        "exporting traces over OTLP/gRPC to %s as %s",
        sink.endpoint,
        res.attributes.get("service.name"),
    )
    return sink
