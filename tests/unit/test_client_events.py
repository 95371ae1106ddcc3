"""The SDK's TaskEvent and TaskResult made from the wire (client/_types.py): the same values,
equality, hash and immutability as instances built with their constructors."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deerflow_controller.client import Task, TaskEvent, TaskResult
from deerflow_protos import common_pb2


def _wire_event(**extra: Any) -> common_pb2.TaskEvent:
    return common_pb2.TaskEvent(
        job_id="j", task_id="t1", seq=7, attempt=2, agent_id="a1", time=12.5, **extra
    )


def test_an_event_from_the_wire_equals_the_one_its_constructor_builds() -> None:
    ev = TaskEvent.from_proto(
        _wire_event(
            state=common_pb2.FAILED,
            error=common_pb2.TaskError(kind=common_pb2.TIMEOUT, message="too slow"),
            detail="why",
            not_before=3.0,
        )
    )
    built = TaskEvent("j", "t1", "FAILED", 7, 2, "a1", 12.5, b"", "TIMEOUT", "too slow", 3.0, "why")
    assert ev == built and hash(ev) == hash(built) and repr(ev) == repr(built)
    assert ev.terminal


def test_a_progress_event_keeps_its_fraction_and_others_read_minus_one() -> None:
    assert (
        TaskEvent.from_proto(_wire_event(state=common_pb2.PROGRESS, progress=0.5)).progress == 0.5
    )
    assert (
        TaskEvent.from_proto(_wire_event(state=common_pb2.RUNNING, progress=0.5)).progress == -1.0
    )


def test_a_result_from_an_event_equals_the_one_its_constructor_builds() -> None:
    ev = TaskEvent.from_proto(_wire_event(state=common_pb2.SUCCEEDED, output=b"out"))
    result = TaskResult.from_event(ev)
    assert result == TaskResult("j", "t1", "SUCCEEDED", b"out", 2, "a1")
    assert result.ok and result.raise_for_error() is result


def test_events_and_results_from_the_wire_stay_frozen() -> None:
    ev = TaskEvent.from_proto(_wire_event(state=common_pb2.SUCCEEDED))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.state = "FAILED"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TaskResult.from_event(ev).output = b"x"  # type: ignore[misc]


def test_an_unknown_state_number_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        TaskEvent.from_proto(_wire_event(state=99))
    with pytest.raises(ValueError):
        TaskResult.from_proto(_wire_event(state=99))


_TEXT = st.text(max_size=8)
_STATES = cast("list[common_pb2.TaskState]", common_pb2.TaskState.values())
_KINDS = cast("list[common_pb2.ErrorKind]", common_pb2.ErrorKind.values())


@st.composite
def _wire_events(draw: st.DrawFn) -> common_pb2.TaskEvent:
    ev = common_pb2.TaskEvent(
        job_id=draw(_TEXT),
        task_id=draw(_TEXT),
        state=draw(st.sampled_from(_STATES)),
        seq=draw(st.integers(0, 2**40)),
        attempt=draw(st.integers(0, 100)),
        agent_id=draw(_TEXT),
        time=draw(st.floats(0, 1e10)),
        output=draw(st.binary(max_size=8)),
        detail=draw(_TEXT),
        cache_layer=draw(st.sampled_from(("", "exact", "similarity"))),
        predicted_s=draw(st.floats(0, 100)),
        not_before=draw(st.floats(0, 100)),
    )
    if draw(st.booleans()):
        ev.error.kind = draw(st.sampled_from(_KINDS))
        ev.error.message = draw(_TEXT)
    return ev


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(ev=_wire_events())
def test_a_result_read_from_the_wire_equals_one_made_through_its_event(
    ev: common_pb2.TaskEvent,
) -> None:
    """``results()`` reads results straight from the wire (no TaskEvent in between): the same
    values as the event's result, whatever the state and error."""
    direct = TaskResult.from_proto(ev)
    through = TaskResult.from_event(TaskEvent.from_proto(ev))
    assert direct == through and repr(direct) == repr(through)


def test_a_task_built_by_position_or_keyword_equals_the_dataclass_one_with_its_defaults() -> None:
    t = Task("a", "echo", b"x", 3, ("b",), timeout_s=2.0, tenant="t")
    assert (t.id, t.handler, t.payload, t.priority, t.depends_on, t.timeout_s) == (
        "a",
        "echo",
        b"x",
        3,
        ("b",),
        2.0,
    )
    assert (t.max_retries, t.cache, t.split, t.inputs, t.tenant) == (-1, "default", True, (), "t")
    assert t == Task(
        id="a",
        handler="echo",
        payload=b"x",
        priority=3,
        depends_on=("b",),
        timeout_s=2.0,
        tenant="t",
    )
    assert repr(t).startswith("Task(id='a', handler='echo', payload=b'x', priority=3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.id = "b"  # type: ignore[misc]


def test_each_task_gets_its_own_labels_dict_by_default() -> None:
    a, b = Task("a", "echo"), Task("b", "echo")
    assert a.labels == {} and a.labels is not b.labels


def test_a_task_missing_a_required_field_or_given_an_unknown_one_is_refused() -> None:
    with pytest.raises(TypeError):
        Task("a")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Task("a", "echo", colour="red")  # type: ignore[call-arg]
