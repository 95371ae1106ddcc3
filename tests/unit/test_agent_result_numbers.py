"""The numbers of an agent's ResultBatch, checked at the edge (service/agent_numbers.py): a
batch in order passes, and one bad number anywhere in it is named, as before the fast path."""

from __future__ import annotations

import math

import pytest

from deerflow_controller.service.agent_numbers import message_problem
from deerflow_protos import agent_pb2


def _batch(
    bad_index: int | None = None, field: str = "", value: float = 0.0
) -> agent_pb2.AgentMessage:
    msg = agent_pb2.AgentMessage()
    for i in range(5):
        r = msg.results.results.add(ok=True, started_at=100.0, finished_at=100.5, cpu_s=0.25)
        if i == bad_index:
            setattr(r, field, value)
    return msg


def test_a_batch_of_results_in_order_has_no_problem() -> None:
    assert message_problem(_batch(), "results") is None
    assert (
        message_problem(agent_pb2.AgentMessage(results=agent_pb2.ResultBatch()), "results") is None
    )


def test_zero_times_and_cpu_are_in_order() -> None:
    msg = agent_pb2.AgentMessage()
    msg.results.results.add(ok=True)
    assert message_problem(msg, "results") is None


@pytest.mark.parametrize("field", ["started_at", "finished_at", "cpu_s"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0])
def test_one_bad_number_in_a_batch_is_named_with_its_field(field: str, value: float) -> None:
    problem = message_problem(_batch(3, field, value), "results")
    assert problem == f"Result {field} is {value!r}; it must be finite and not negative"
