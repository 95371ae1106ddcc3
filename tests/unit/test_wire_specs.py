"""A submitted task's proto becomes the core's TaskSpec (``service.wire.spec_from_proto``, which
reads only the fields the submitter set): checked against a field-by-field reading of every
field, over generated protos with any combination of fields set."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from deerflow_controller.core.model import CachePolicy, SplitPolicy, TaskSpec
from deerflow_controller.service import wire
from deerflow_protos import common_pb2

JOB_TC = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def read_every_field(t: common_pb2.TaskSpec, job_tc: dict[str, str]) -> TaskSpec:
    """The meaning of each field, read one by one (what the controller did before)."""
    cache = t.cache if t.cache in {int(p) for p in CachePolicy} else CachePolicy.DEFAULT
    return TaskSpec(
        t.id,
        t.handler,
        t.payload,
        t.priority,
        tuple(t.depends_on),
        t.timeout_s,
        t.max_retries,
        dict(t.labels),
        t.schedule_to_start_s,
        t.heartbeat_timeout_s,
        dict(t.trace_context) if t.trace_context else job_tc,
        tuple(t.rate_keys),
        t.est_tokens,
        t.tenant,
        CachePolicy(cache),
        SplitPolicy.NEVER if int(t.split) == int(SplitPolicy.NEVER) else SplitPolicy.AUTO,
        t.partial_results,
        t.est_duration_s,
        t.schedule_to_close_s,
        tuple(t.inputs),
        t.inputs_all,
    )


names = st.text("abc/-_.", min_size=1, max_size=6)
numbers = st.floats(0.0, 1e6)
fields = st.fixed_dictionaries(
    {},
    optional={
        "id": names,
        "handler": names,
        "payload": st.binary(max_size=8),
        "priority": st.integers(-1_000_000, 1_000_000),
        "depends_on": st.lists(names, max_size=3),
        "timeout_s": numbers,
        "max_retries": st.integers(-1, 10),
        "labels": st.dictionaries(names, names, max_size=2),
        "schedule_to_start_s": numbers,
        "heartbeat_timeout_s": numbers,
        "trace_context": st.dictionaries(st.sampled_from(["traceparent", "tracestate"]), names),
        "rate_keys": st.lists(names, max_size=3),
        "est_tokens": numbers,
        "tenant": names,
        # Out of the enum's range too: an unknown policy reads as the default.
        "cache": st.integers(0, 9),
        "split": st.integers(0, 9),
        "partial_results": st.booleans(),
        "est_duration_s": numbers,
        "schedule_to_close_s": numbers,
        "inputs": st.lists(names, max_size=3),
        "inputs_all": st.booleans(),
    },
)


@settings(max_examples=300, deadline=None)
@given(fields=fields)
def test_a_spec_is_every_field_it_was_sent_with(fields: dict[str, object]) -> None:
    t = common_pb2.TaskSpec()
    for name, value in fields.items():
        target = getattr(t, name)
        if isinstance(value, list):
            target.extend(value)
        elif isinstance(value, dict):
            target.update(value)
        else:
            setattr(t, name, value)
    # Through the wire, as the controller receives it (enums out of range stay as numbers).
    received = common_pb2.TaskSpec.FromString(t.SerializeToString())
    for job_tc in ({}, JOB_TC):
        got, want = wire.spec_from_proto(received, job_tc), read_every_field(received, job_tc)
        assert got == want
        # Plain Python values, not protobuf containers (which compare equal to them).
        for f in dataclasses.fields(TaskSpec):
            assert type(getattr(got, f.name)) is type(getattr(want, f.name)), f.name


def test_every_proto_field_has_a_place_in_the_spec() -> None:
    """A field added to TaskSpec in common.proto needs one in the core's TaskSpec (same name),
    or the conversion would not know where to put it."""
    proto = {f.name for f in common_pb2.TaskSpec.DESCRIPTOR.fields}
    core = {f.name for f in dataclasses.fields(TaskSpec)}
    assert proto == core


def test_a_task_without_a_trace_context_shares_the_jobs_dict() -> None:
    spec = wire.spec_from_proto(common_pb2.TaskSpec(id="t", handler="echo"), JOB_TC)
    assert spec.trace_context is JOB_TC
    assert spec.depends_on == () and spec.labels == {} and spec.max_retries == 0
