"""How trace context crosses the controller-agent stream: the traceparent in a field of its
own, other entries (tracestate) in the map, and an agent that still reads an older
controller's map."""

from __future__ import annotations

from deerflow_agent._session import attempt_from_assignment
from deerflow_controller.core.model import Job, Task, TaskSpec
from deerflow_controller.service import wire
from deerflow_protos import agent_pb2

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _task(trace_context: dict[str, str]) -> Task:
    spec = TaskSpec("t1", "echo", b"x", trace_context=trace_context)
    task = Task(Job("job-1", "", 0.0), spec, 0.0, 0)
    task.attempt = 1
    return task


def test_the_traceparent_rides_in_its_field_and_other_entries_in_the_map() -> None:
    msg = wire.assignment_batch(3, [_task({"traceparent": PARENT, "tracestate": "k=v"})])
    (a,) = msg.assignments.assignments
    assert a.traceparent == PARENT
    assert dict(a.trace_context) == {"tracestate": "k=v"}
    attempt = attempt_from_assignment(a)
    assert attempt.trace_context == {"traceparent": PARENT, "tracestate": "k=v"}
    assert attempt.key == ("job-1", "t1", 1)

    (plain,) = wire.assignment_batch(3, [_task({"traceparent": PARENT})]).assignments.assignments
    assert (plain.traceparent, len(plain.trace_context)) == (PARENT, 0)
    assert attempt_from_assignment(plain).trace_context == {"traceparent": PARENT}


def test_an_untraced_task_carries_no_context() -> None:
    (a,) = wire.assignment_batch(3, [_task({})]).assignments.assignments
    assert (a.traceparent, len(a.trace_context)) == ("", 0)
    assert attempt_from_assignment(a).trace_context is None


def test_an_agent_reads_the_map_of_a_controller_without_the_field() -> None:
    a = agent_pb2.Assignment(handler="echo", trace_context={"traceparent": PARENT})
    a.ref.job_id, a.ref.task_id, a.ref.attempt = "job-1", "t1", 2
    assert attempt_from_assignment(a).trace_context == {"traceparent": PARENT}


def test_the_tracers_traceparents_replace_the_submitters_and_keep_the_rest() -> None:
    ours = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    tasks = [_task({"traceparent": PARENT, "tracestate": "k=v"}), _task({})]
    first, second = wire.assignment_batch(3, tasks, [ours, ours]).assignments.assignments
    assert (first.traceparent, dict(first.trace_context)) == (ours, {"tracestate": "k=v"})
    assert (second.traceparent, len(second.trace_context)) == (ours, 0)
    assert (first.ref.job_id, first.ref.task_id, first.ref.attempt) == ("job-1", "t1", 1)
