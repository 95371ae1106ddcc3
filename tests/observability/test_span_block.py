"""Spans encoded a block at a time (``deerflow_common.span_block``) must be the spans the
one-by-one encoder writes, field for field, as the official protobuf definitions read them; and
the sink must batch and bound blocks as it does single spans."""

from __future__ import annotations

import os
import random

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from deerflow_bench import OtlpReceiver
from deerflow_common import tracing as otlp
from deerflow_common.tracing import encode_span_block

HEAD = otlp.span_head("deerflow.execute", otlp.KIND_CONSUMER)
SHARED_ATTRS = otlp.attr_str("deerflow.job.id", "job-1") + otlp.attr_int("deerflow.attempt", 2)
KEY = "deerflow.task.id"


def _spans(data: bytes) -> list[trace_pb2.Span]:
    return list(trace_pb2.ScopeSpans.FromString(data).spans)


def _one_by_one(
    trace_ids: list[bytes],
    span_ids: list[bytes],
    parent_ids: list[bytes | None],
    starts: list[float],
    ends: list[float],
    values: list[str],
) -> list[trace_pb2.Span]:
    data = b"".join(
        otlp.encode_span(
            trace_ids[i],
            span_ids[i],
            parent_ids[i],
            HEAD,
            int(starts[i] * 1e9),
            int(ends[i] * 1e9),
            SHARED_ATTRS + otlp.attr_str(KEY, values[i]),
        )
        for i in range(len(values))
    )
    return _spans(data)


def _canonical(spans: list[trace_pb2.Span]) -> list[bytes]:
    """Each span re-serialized by protobuf with its attributes in name order (the block puts
    the task id after the shared attributes, the one-by-one encoder before some), sorted."""
    out = []
    for s in spans:
        copy = trace_pb2.Span()
        copy.CopyFrom(s)
        attrs = sorted(copy.attributes, key=lambda kv: kv.key)
        del copy.attributes[:]
        copy.attributes.extend(attrs)
        out.append(copy.SerializeToString(deterministic=True))
    return sorted(out)


@pytest.mark.parametrize("shared_ids", [False, True])
def test_a_block_holds_the_same_spans_as_the_one_by_one_encoder(shared_ids: bool) -> None:
    rng = random.Random(7)
    n = 300
    # Task ids of many lengths: empty, ASCII, past one varint byte, and not ASCII.
    values = [
        rng.choice(["", "t", f"t{i}", f"task-{i:06d}", "x" * 140 + str(i), f"tâche-{i}"])
        for i in range(n)
    ]
    if shared_ids:
        trace = otlp.new_trace_id()
        parent = otlp.new_span_id()
        trace_ids, parent_ids = [trace] * n, [parent] * n
        trace_arg, parent_arg = trace, parent
    else:
        trace_ids = [otlp.new_trace_id() for _ in range(n)]
        parent_ids = [otlp.new_span_id() for _ in range(n)]
        trace_arg, parent_arg = b"".join(trace_ids), b"".join(parent_ids)
    span_ids = [otlp.new_span_id() for _ in range(n)]
    starts = [1_764_300_000.0 + rng.random() * 100 for _ in range(n)]
    ends = [s + rng.random() for s in starts]

    blocks = encode_span_block(
        trace_ids=trace_arg,
        span_ids=b"".join(span_ids),
        parent_ids=parent_arg,
        starts=starts,
        ends=ends,
        values=values,
        value_key=KEY,
        shared=HEAD + SHARED_ATTRS,
    )

    assert sum(count for _, count in blocks) == n
    for data, count in blocks:  # equal-sized rows: the sink may cut a block anywhere between
        assert len(data) % count == 0
        assert len(_spans(data)) == count
    got = _spans(b"".join(data for data, _ in blocks))
    want = _one_by_one(trace_ids, span_ids, list(parent_ids), starts, ends, values)
    assert _canonical(got) == _canonical(want)
    assert {s.attributes[-1].value.string_value for s in got} == set(values)


def test_root_spans_have_no_parent_and_one_end_time_may_serve_all() -> None:
    n = 5
    span_ids = os.urandom(8 * n)
    ((data, count),) = encode_span_block(
        trace_ids=otlp.new_trace_id(),
        span_ids=span_ids,
        parent_ids=b"",
        starts=[10.0 + i for i in range(n)],
        ends=20.5,
        values=[f"t{i}" for i in range(n)],
        value_key=KEY,
        shared=HEAD,
    )
    spans = _spans(data)
    assert count == n
    assert [s.parent_span_id for s in spans] == [b""] * n
    assert [s.span_id for s in spans] == [span_ids[8 * i : 8 * i + 8] for i in range(n)]
    assert {s.end_time_unix_nano for s in spans} == {20_500_000_000}
    assert [s.start_time_unix_nano for s in spans] == [(10 + i) * 10**9 for i in range(n)]


def test_ids_that_do_not_match_the_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="trace_ids holds 2 ids for 3 spans"):
        encode_span_block(
            trace_ids=os.urandom(32),
            span_ids=os.urandom(24),
            parent_ids=b"",
            starts=[1.0, 2.0, 3.0],
            ends=4.0,
            values=["a", "b", "c"],
            value_key=KEY,
            shared=HEAD,
        )
    assert encode_span_block(
        trace_ids=b"", span_ids=b"", parent_ids=b"", starts=[], ends=[], values=[],
        value_key=KEY, shared=HEAD,
    ) == []  # fmt: skip


async def test_the_sink_batches_blocks_drops_past_its_queue_and_encodes_records_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "30")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only batches or flush send
        sink = otlp.tracing_from_env("svc", "scope", install_sdk=False)
        assert sink is not None
        recorded: list[int] = []

        def encode_recorded() -> None:
            for data, count in encode_span_block(
                trace_ids=otlp.new_trace_id(),
                span_ids=os.urandom(8 * len(recorded)),
                parent_ids=b"",
                starts=[1.0] * len(recorded),
                ends=2.0,
                values=[f"r{i}" for i in recorded],
                value_key=KEY,
                shared=HEAD,
            ):
                sink.emit_block(data, count)
            recorded.clear()

        sink.add_source(encode_recorded)
        ((block, count),) = encode_span_block(
            trace_ids=otlp.new_trace_id(),
            span_ids=os.urandom(8 * 80),
            parent_ids=b"",
            starts=[1.0] * 80,
            ends=2.0,
            values=[f"b{i:02d}" for i in range(80)],
            value_key=KEY,
            shared=HEAD,
        )
        sink.emit_block(block, count)
        assert (sink.queued, sink.dropped) == (80, 0)
        recorded.extend(range(25))  # a producer's records, encoded just before the export
        sink.defer(25)
        await sink.flush()
        # 80 + 25 spans against a queue of 100: 5 dropped and counted, none lost silently.
        assert (sink.exported, sink.dropped, sink.failed, sink.queued) == (100, 5, 0, 0)
        spans = await receiver.wait_for_spans(100, timeout_s=10)
        names = {s.attributes["deerflow.task.id"] for s in spans}
        assert {f"b{i:02d}" for i in range(80)} <= names
        assert len(names & {f"r{i}" for i in range(25)}) == 20
        assert receiver.requests >= 4  # batches of at most 30 spans
        await sink.shutdown()
