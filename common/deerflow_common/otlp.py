"""Spans of the task path, encoded straight to OTLP protobuf bytes and exported in batches.

Both daemons record one span per task attempt (the controller's wait-and-dispatch, the agent's
execution). The OpenTelemetry SDK's own spans are too dear for that: measured on a 2-core
machine, an SDK span with five attributes costs about 95 us on the event loop and 130 us of CPU
once exported (``encode_spans`` is pure Python), while the no-op benchmark's whole budget is
about 100 us of CPU per task across every process. A span here is one ``bytes`` join of
pre-encoded protobuf fields (a few microseconds); a background thread ships batches through the
SDK's own ``OTLPSpanExporter``, so every ``OTEL_EXPORTER_OTLP_*`` setting (endpoint, headers,
TLS, compression, timeout, retries) applies and a backend cannot tell the difference.

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

import grpc

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

TRACEPARENT = "traceparent"


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
    """A serialized ``ExportTraceServiceRequest`` of one resource and one scope."""
    scope_spans = scope + b"".join(spans)
    resource_spans = resource + b"\x12" + _varint(len(scope_spans)) + scope_spans
    return b"\x0a" + _varint(len(resource_spans)) + resource_spans


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


class OtlpChannel:
    """Where spans go: an asyncio gRPC channel configured exactly as the SDK's
    ``OTLPSpanExporter`` would be from the environment (endpoint, TLS, client certificates,
    headers, compression, timeout). The SDK exporter parses the variables; we take its
    results, close it, and send pre-serialized requests ourselves on the daemon's event loop,
    so exporting needs no thread (a thread's GIL hand-offs cost the loop several microseconds
    per span)."""

    _PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        sdk: Any = OTLPSpanExporter()
        self.endpoint: str = sdk._endpoint
        self.headers: tuple[tuple[str, str], ...] = tuple(sdk._headers or ())
        self.timeout_s: float = float(sdk._timeout)
        self._insecure: bool = bool(sdk._insecure)
        self._credentials: Any = sdk._credentials
        self._compression: Any = sdk._compression
        self._options: Any = sdk._channel_options
        sdk.shutdown()
        self._channel: grpc.aio.Channel | None = None
        self._export: Any = None

    def _open(self) -> Any:
        if self._export is None:
            if self._insecure:
                self._channel = grpc.aio.insecure_channel(
                    self.endpoint, options=self._options, compression=self._compression
                )
            else:
                self._channel = grpc.aio.secure_channel(
                    self.endpoint,
                    self._credentials,
                    options=self._options,
                    compression=self._compression,
                )
            self._export = self._channel.unary_unary(
                self._PATH, request_serializer=_identity, response_deserializer=_identity
            )
        return self._export

    async def send(self, request: bytes) -> None:
        """One Export call; raises grpc.aio.AioRpcError."""
        await self._open()(request, metadata=self.headers or None, timeout=self.timeout_s)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._export = None


def _identity(b: bytes) -> bytes:
    return b


_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


class SpanSink:
    """A bounded queue of encoded spans, exported in batches by a task on the event loop.

    :meth:`emit` never blocks: it appends to a deque (spans beyond ``max_queue`` are dropped and
    counted, with one warning per minute). Call :meth:`start` on the daemon's loop; the export
    task sends whenever ``max_batch`` spans are waiting or ``schedule_delay_s`` has passed, one
    request at a time, retrying transient errors with backoff within the export timeout.
    :meth:`flush` exports what is queued; :meth:`shutdown` flushes and closes the channel.
    """

    def __init__(
        self,
        channel: Any,
        resource: Mapping[str, object],
        scope: tuple[str, str],
        settings: BatchSettings,
        sampling: Sampling,
    ) -> None:
        self.channel = channel
        self.sampling = sampling
        self.settings = settings
        self.resource_attributes = dict(resource)
        self._resource = _resource_field(resource)
        self._scope = _scope_field(*scope)
        self._queue: collections.deque[bytes] = collections.deque()
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

    def start(self) -> None:
        """Start exporting from the running event loop (idempotent)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def emit(self, span: bytes) -> None:
        """Queue one span (from the event loop's thread; the first call starts the export
        task on the running loop)."""
        queue = self._queue
        if self._wake is None:
            self.start()
        if len(queue) >= self._max_queue:
            self._drop()
            return
        queue.append(span)
        if len(queue) == self._max_batch and self._wake is not None:
            self._wake.set()

    def _drop(self) -> None:
        self.dropped += 1
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
        return len(self._queue)

    async def flush(self) -> None:
        """Export everything queued now (returns when sent, or given up on)."""
        await self._export_queued()

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush (for at most ``timeout_s``: a daemon must exit promptly even when the
        collector is down), stop the export task, close the channel."""
        try:
            await asyncio.wait_for(self.flush(), min(timeout_s, self.settings.export_timeout_s))
        except TimeoutError:
            log.warning("gave up exporting %d spans at shutdown", len(self._queue))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.channel.close()
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
            queue = self._queue
            while queue:
                batch: list[bytes] = []
                size = 0
                pop = queue.popleft
                while queue and len(batch) < self._max_batch and size < MAX_REQUEST_BYTES:
                    span = pop()
                    size += len(span)
                    batch.append(span)
                ok = await self._send(export_request(self._resource, self._scope, batch))
                if ok:
                    self.exported += len(batch)
                else:
                    self.failed += len(batch)

    async def _send(self, request: bytes) -> bool:
        deadline = time.monotonic() + self.settings.export_timeout_s
        backoff = 1.0
        while True:
            try:
                await self.channel.send(request)
                return True
            except grpc.aio.AioRpcError as e:
                code = e.code()
                wait = backoff * random.uniform(0.8, 1.2)
                if code not in _RETRYABLE or time.monotonic() + wait > deadline:
                    log.error(
                        "exporting spans to %s failed: %s: %s",
                        getattr(self.channel, "endpoint", "?"),
                        code.name,
                        e.details(),
                    )
                    return False
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, 32.0)


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
        OtlpChannel(),
        dict(res.attributes),
        (scope, _version()),
        BatchSettings.from_env(os.environ),
        Sampling(provider.sampler),
    )
    sink.provider = provider if install_sdk else None
    log.info(
        "exporting traces over OTLP/gRPC to %s as %s",
        sink.channel.endpoint,
        res.attributes.get("service.name"),
    )
    return sink
