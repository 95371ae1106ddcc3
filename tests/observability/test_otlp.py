"""The OTLP encoding and export used by both daemons, checked against the official protobuf
definitions and a real receiver."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from deerflow_bench import OtlpReceiver
from deerflow_common import tracing as otlp
from deerflow_common.tracing._encoding import resource_field, scope_field
from deerflow_common.tracing._exporter import Batch, exporter_class


def test_a_span_encoded_by_hand_parses_as_the_official_message() -> None:
    trace_id, span_id, parent_id = otlp.new_trace_id(), otlp.new_span_id(), otlp.new_span_id()
    fields = b"".join(
        (
            otlp.attr_str("deerflow.job.id", "j" * 200),  # lengths past one varint byte
            otlp.str_attr_encoder("deerflow.task.id")("t-1"),
            otlp.attr_int("deerflow.attempt", 2),
            otlp.attr_int("negative", -3),
            otlp.attr_float("ratio", 0.25),
            otlp.attr_bool("flag", True),
            otlp.attr_strs("deerflow.rate_keys", ["a", "b"]),
            otlp.event("retry", 7, otlp.attr_str("error.kind", "TIMEOUT", otlp.EVENT_ATTR)),
            otlp.status(otlp.STATUS_ERROR, "boom"),
        )
    )
    span = otlp.encode_span(
        trace_id,
        span_id,
        parent_id,
        otlp.span_head("deerflow.execute", otlp.KIND_CONSUMER),
        5,
        9,
        fields,
    )
    request = otlp.export_request(
        resource_field({"service.name": "svc", "n": 3}),
        scope_field("s", "1.0"),
        [span] * 3,
    )
    msg = trace_service_pb2.ExportTraceServiceRequest.FromString(request)
    (rs,) = msg.resource_spans
    assert [
        (kv.key, kv.value.string_value or kv.value.int_value) for kv in rs.resource.attributes
    ] == [
        ("service.name", "svc"),
        ("n", 3),
    ]
    (ss,) = rs.scope_spans
    assert (ss.scope.name, ss.scope.version, len(ss.spans)) == ("s", "1.0", 3)
    s = ss.spans[0]
    assert (s.trace_id, s.span_id, s.parent_span_id) == (trace_id, span_id, parent_id)
    assert (s.name, s.kind, s.start_time_unix_nano, s.end_time_unix_nano) == (
        "deerflow.execute",
        5,
        5,
        9,
    )
    attrs = {kv.key: kv.value for kv in s.attributes}
    assert attrs["deerflow.job.id"].string_value == "j" * 200
    assert attrs["deerflow.task.id"].string_value == "t-1"
    assert attrs["deerflow.attempt"].int_value == 2
    assert attrs["negative"].int_value == -3
    assert attrs["ratio"].double_value == 0.25
    assert attrs["flag"].bool_value is True
    assert [v.string_value for v in attrs["deerflow.rate_keys"].array_value.values] == ["a", "b"]
    (ev,) = s.events
    assert (ev.name, ev.time_unix_nano, ev.attributes[0].value.string_value) == (
        "retry",
        7,
        "TIMEOUT",
    )
    assert (s.status.code, s.status.message) == (2, "boom")


def _hook_changed(what: str) -> str:
    """The sentence a failing hook test says: what changed and what to do about it."""
    version = importlib.metadata.version("opentelemetry-exporter-otlp-proto-grpc")
    return (
        f"opentelemetry-exporter-otlp-proto-grpc {version}: {what}. "
        "deerflow_common/tracing/_exporter.py overrides the exporter's private hooks "
        "_translate_data(self, data) and _count_data(self, data), which OTLPExporterMixin._export "
        "calls with what export() was given, to send spans it encoded itself: port that override "
        f"to the exporter's new hook, or pin the package below {version} in pyproject.toml"
    )


def test_the_sdk_exporter_still_has_the_private_hooks_our_encoder_replaces() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    for hook in ("_translate_data", "_count_data"):
        fn = getattr(OTLPSpanExporter, hook, None)
        assert callable(fn), _hook_changed(f"OTLPSpanExporter.{hook} is gone")
        params = list(inspect.signature(fn).parameters)
        assert params == ["self", "data"], _hook_changed(
            f"OTLPSpanExporter.{hook} now takes {params}"
        )
    export = list(inspect.signature(OTLPSpanExporter.export).parameters)
    assert len(export) == 2, _hook_changed(f"OTLPSpanExporter.export now takes {export}")
    source = inspect.getsource(OTLPExporterMixin._export)
    for call in ("self._translate_data(data)", "self._count_data(data)"):
        assert call in source, _hook_changed(f"OTLPExporterMixin._export no longer calls {call}")


async def test_a_pre_encoded_request_goes_through_the_sdk_exporter_unchanged() -> None:
    head = otlp.span_head("hook", otlp.KIND_INTERNAL)
    spans = [
        otlp.encode_span(otlp.new_trace_id(), otlp.new_span_id(), None, head, 1, 2, b"")
        for _ in range(3)
    ]
    request = otlp.export_request(
        resource_field({"service.name": "hook-check"}), scope_field("s", "1"), spans
    )
    async with OtlpReceiver() as receiver:
        try:
            exporter = exporter_class()(endpoint=receiver.endpoint, insecure=True)
        except Exception as exc:
            pytest.fail(_hook_changed(f"making the exporter raised {exc!r}"))
        try:
            result = await asyncio.to_thread(exporter.export, Batch(request, len(spans)))
        except Exception as exc:
            pytest.fail(_hook_changed(f"exporting a pre-encoded request raised {exc!r}"))
        finally:
            await asyncio.to_thread(exporter.shutdown)
        from opentelemetry.sdk.trace.export import SpanExportResult

        assert result == SpanExportResult.SUCCESS, _hook_changed(f"the export returned {result}")
        received = await receiver.wait_for_spans(3, timeout_s=10)
        assert [(s.service, s.name) for s in received] == [("hook-check", "hook")] * 3


def test_traceparent_round_trips_and_invalid_headers_are_ignored() -> None:
    trace_id, span_id = otlp.new_trace_id(), otlp.new_span_id()
    header = otlp.format_traceparent(trace_id, span_id, True)
    assert otlp.parse_traceparent(header) == otlp.TraceParent(trace_id, span_id, True)
    unsampled = otlp.format_traceparent(trace_id, span_id, False)
    assert otlp.parse_traceparent(unsampled) == otlp.TraceParent(trace_id, span_id, False)
    for bad in (
        "",
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
        header[:-1],
        "ff" + header[2:],
    ):
        assert otlp.parse_traceparent(bad) is None


def test_parent_based_sampling_follows_the_flag_and_ratio_agrees_on_the_trace_id() -> None:
    parent_based = otlp.Sampling(ParentBased(ALWAYS_OFF))
    tid = otlp.new_trace_id()
    sampled = otlp.TraceParent(tid, otlp.new_span_id(), True)
    assert parent_based.sampled(tid, sampled, "x") is True
    assert parent_based.sampled(tid, otlp.TraceParent(tid, sampled.span_id, False), "x") is False
    assert parent_based.sampled(tid, None, "x") is False  # the root sampler decides
    assert otlp.Sampling(ALWAYS_ON).sampled(tid, None, "x") is True
    ratio = otlp.Sampling(TraceIdRatioBased(0.5))
    decisions = {ratio.sampled(t, None, "x") for t in [otlp.new_trace_id() for _ in range(200)]}
    assert decisions == {True, False}


_SAMPLERS: list[Sampler] = [
    ALWAYS_ON,
    ALWAYS_OFF,
    DEFAULT_ON,
    DEFAULT_OFF,
    ParentBased(ALWAYS_ON),  # not the SDK's instance: asked, not assumed
    TraceIdRatioBased(0.5),
    ParentBased(TraceIdRatioBased(0.3)),
]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    sampler=st.sampled_from(_SAMPLERS),
    trace_id=st.integers(1, 2**128 - 1).map(lambda n: n.to_bytes(16, "big")),
    parent=st.sampled_from((None, True, False)),
)
def test_sampling_answers_what_the_configured_sampler_answers(
    sampler: Sampler, trace_id: bytes, parent: bool | None
) -> None:
    """The SDK's always-on/off samplers (and their parent-based forms) decide a span without a
    parent without being asked each time: the same answer as asking."""
    context = None if parent is None else otlp.TraceParent(trace_id, otlp.new_span_id(), parent)
    if context is not None and isinstance(sampler, ParentBased):
        expected = context.sampled
    else:
        decision = sampler.should_sample(None, int.from_bytes(trace_id, "big"), "x").decision
        expected = decision is Decision.RECORD_AND_SAMPLE
    assert otlp.Sampling(sampler).sampled(trace_id, context, "x") is expected


def test_the_default_sampler_is_the_sdk_instance_whose_roots_are_not_asked() -> None:
    """Without OTEL_TRACES_SAMPLER the provider's sampler is DEFAULT_ON: the fixed answer above
    is what a controller with default settings uses."""
    assert TracerProvider().sampler is DEFAULT_ON


def test_batch_settings_come_from_the_sdk_variables() -> None:
    s = otlp.BatchSettings.from_env(
        {
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BSP_MAX_QUEUE_SIZE": "10",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "99",
        }
    )
    assert (s.schedule_delay_s, s.max_queue, s.max_batch) == (0.05, 10, 10)
    assert otlp.BatchSettings.from_env({"OTEL_BSP_SCHEDULE_DELAY": "soon"}).schedule_delay_s == 5.0


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_with_an_endpoint(env: dict[str, str], enabled: bool) -> None:
    assert otlp.tracing_enabled(env) is enabled


async def test_the_sink_exports_in_batches_and_drops_beyond_its_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "30")
        sink = otlp.tracing_from_env("svc", "scope", install_sdk=False)
        assert sink is not None
        head = otlp.span_head("s", otlp.KIND_INTERNAL)
        for i in range(120):
            sink.emit(
                otlp.encode_span(otlp.new_trace_id(), otlp.new_span_id(), None, head, i, i + 1, b"")
            )
        assert sink.dropped == 20
        await sink.shutdown()
        assert (sink.exported, sink.failed) == (100, 0)
        spans = await receiver.wait_for_spans(100, timeout_s=10)
        assert {s.service for s in spans} == {"svc"}
        assert receiver.requests >= 4  # batches of at most 30


def test_without_an_endpoint_nothing_is_traced_and_nothing_runs_per_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    from deerflow_agent._telemetry import AgentTelemetry
    from deerflow_controller.config import ControllerConfig
    from deerflow_controller.observability import Observability
    from deerflow_controller.service.shell import Shell

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    before = trace.get_tracer_provider()
    assert otlp.tracing_from_env("svc", "scope") is None
    assert trace.get_tracer_provider() is before  # no SDK provider installed
    # The agent's runtime gets no observer (no call at all per attempt) ...
    assert AgentTelemetry.from_env("agent-1", metrics=False).observer is None
    # ... and the controller's shell no interceptor (nothing reads the event logs).
    shell = Shell(ControllerConfig())
    obs = Observability.from_env(shell)
    assert (obs.sink, obs.tracer, obs.tap, shell.interceptors) == (None, None, None, [])
