"""What a handler sees of its dependencies' outputs (issue #15): ``ctx.inputs``, a read-only
mapping in depends_on order with JSON and text helpers, given by the test environment as the
agent gives it; empty when the task asked for none; refused to cpu handlers."""

from __future__ import annotations

import json

import pytest

from deerflow_agent import FatalError, HandlerEnvironment, Inputs, TaskContext, handler
from deerflow_agent.builtins import cpu


@handler("summarise")
async def summarise(ctx: TaskContext, payload: bytes) -> bytes:
    found = {name: ctx.inputs.json(name)["n"] for name in ctx.inputs}
    return json.dumps({"order": list(ctx.inputs), "found": found}).encode()


async def test_an_io_handler_reads_its_inputs_in_the_order_given() -> None:
    env = HandlerEnvironment()
    inputs = {"search-2": b'{"n": 2}', "search-1": b'{"n": 1}'}
    out = json.loads(await env.run(summarise, b"", inputs=inputs))
    assert out == {"order": ["search-2", "search-1"], "found": {"search-2": 2, "search-1": 1}}


async def test_a_task_that_asked_for_nothing_sees_no_inputs() -> None:
    out = json.loads(await HandlerEnvironment().run(summarise, b""))
    assert out == {"order": [], "found": {}}


def test_inputs_are_read_only_and_name_what_was_asked_for_when_a_key_is_missing() -> None:
    inputs = Inputs([("a", b"hello"), ("b", b"[1]")])
    assert inputs.text("a") == "hello" and inputs.json("b") == [1]
    with pytest.raises(KeyError, match=r"no input 'c': the task asked for 'a', 'b'"):
        inputs["c"]
    with pytest.raises(TypeError):
        inputs["a"] = b"x"  # type: ignore[index]
    assert repr(inputs) == "Inputs(a: 5 bytes, b: 3 bytes)"


async def test_a_cpu_handler_given_inputs_is_refused_as_on_an_agent() -> None:
    with pytest.raises(FatalError, match=r"'cpu' is a cpu handler, which gets no context"):
        await HandlerEnvironment().run(cpu, b"{}", inputs={"a": b"x"})


async def test_inputs_must_be_bytes() -> None:
    with pytest.raises(TypeError, match=r"input 'a' must be bytes, got str"):
        await HandlerEnvironment().run(summarise, b"", inputs={"a": "text"})  # type: ignore[dict-item]
