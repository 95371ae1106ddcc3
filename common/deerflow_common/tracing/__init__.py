"""Spans of the task path, encoded straight to OTLP protobuf bytes and exported in batches by
the OpenTelemetry SDK's own OTLP/gRPC exporter.

Both daemons record one span per task attempt (the controller's wait-and-dispatch, the agent's
execution). The SDK's spans are too dear for that. Measured on the 2-core machine (Python
3.11, SDK 1.45.2, five attributes, BatchSpanProcessor): creating and ending a span costs about
54 us and ``encode_spans`` about 55 us more, against about 90 us of CPU for a whole no-op task
across the client, controller and agents: two SDK spans per task would more than double it. Here
the hot path records only what a span needs; spans are encoded just before an export, those of
one shape a block at a time with numpy (:func:`encode_span_block`, about 0.5-1 us a span), any
other by one ``bytes`` join of pre-encoded protobuf fields (2-4 us); batches go through the SDK's
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

One private module per concept: ``_context`` (W3C trace context), ``_encoding`` (protobuf
fields), ``_block`` (many spans at once, numpy), ``_sampling``, ``_exporter`` (the SDK
exporter's private hook, the only one we depend on), ``_sink`` (queue and batches) and
``_config`` (the environment). Import from here. :func:`encode_span_block` is loaded on first
use, as numpy takes a tenth of a second to import and only a tracing daemon needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Configuration
from ._config import BatchSettings, tracing_enabled, tracing_from_env

# W3C trace context
from ._context import (
    TRACEPARENT,
    TraceParent,
    context_dict,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)

# Encoding spans
from ._encoding import (
    EVENT_ATTR,
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    attr_bool,
    attr_float,
    attr_int,
    attr_str,
    attr_strs,
    encode_span,
    event,
    export_request,
    span_head,
    status,
    str_attr_encoder,
    varint,
)

# Sampling
from ._sampling import Sampling

# Exporting
from ._sink import MAX_REQUEST_BYTES, SpanSink

if TYPE_CHECKING:
    from ._block import encode_span_block

__all__ = [  # grouped by the import headers above; sorted as ruff wants
    "EVENT_ATTR",
    "KIND_CLIENT",
    "KIND_CONSUMER",
    "KIND_INTERNAL",
    "KIND_PRODUCER",
    "KIND_SERVER",
    "MAX_REQUEST_BYTES",
    "STATUS_ERROR",
    "STATUS_OK",
    "TRACEPARENT",
    "BatchSettings",
    "Sampling",
    "SpanSink",
    "TraceParent",
    "attr_bool",
    "attr_float",
    "attr_int",
    "attr_str",
    "attr_strs",
    "context_dict",
    "encode_span",
    "encode_span_block",
    "event",
    "export_request",
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


def __getattr__(name: str) -> Any:
    if name == "encode_span_block":
        from ._block import encode_span_block

        globals()[name] = encode_span_block  # later look-ups skip this function
        return encode_span_block
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
