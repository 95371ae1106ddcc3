"""Tracing as the standard ``OTEL_*`` environment asks for it (see the package docstring)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ._exporter import exporter_class
from ._sampling import Sampling
from ._sink import SpanSink

__all__ = ["BatchSettings", "tracing_enabled", "tracing_from_env"]

log = logging.getLogger(__name__)


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
        exporter_class()(),
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
