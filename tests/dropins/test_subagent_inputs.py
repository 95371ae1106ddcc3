"""The ``subagent`` handler's inputs: a task's dependencies' outputs (``ctx.inputs``) reach the
sub-agent as data, in its state's ``inputs`` and as one context message before the task; a task
without inputs gets exactly the state it got before."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda

from deerflow_agent import FatalError, HandlerEnvironment
from deerflow_bench.example_subagents import reporter
from deerflow_dropins.subagent_handler import MAX_INPUT_CHARS, make_subagent_handler


async def _show_state(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
    """Answers with what it was given: the state's keys, its inputs and its messages."""
    messages: list[BaseMessage] = state["messages"]
    seen = {
        "keys": sorted(state),
        "inputs": state.get("inputs"),
        "messages": [[m.type, m.content] for m in messages],
    }
    return {"messages": [*messages, AIMessage(content=json.dumps(seen))]}


HANDLER = make_subagent_handler({"show": RunnableLambda(_show_state), "reporter": reporter})


def payload(name: str) -> bytes:
    return json.dumps(
        {"subagent": name, "task": "Write the report", "system_prompt": "Be brief"}
    ).encode()


async def seen(inputs: dict[str, bytes] | None) -> dict[str, Any]:
    out = json.loads(await HandlerEnvironment().run(HANDLER, payload("show"), inputs=inputs))
    assert out["status"] == "completed", out
    result: dict[str, Any] = json.loads(out["result"])
    return result


async def test_inputs_reach_the_run_in_its_state_and_as_a_message_before_the_task() -> None:
    step = {"status": "completed", "result": "EV cells got 12% cheaper", "turns": 2}
    inputs = {"step-2": json.dumps(step).encode(), "notes": b"plain notes"}

    got = await seen(inputs)

    # A sub-agent's output gives its result; any other output its text; depends_on order kept.
    assert got["inputs"] == {"step-2": "EV cells got 12% cheaper", "notes": "plain notes"}
    assert list(got["inputs"]) == ["step-2", "notes"]
    assert got["keys"] == ["inputs", "messages"]
    system, context, task = got["messages"]
    assert system == ["system", "Be brief"]
    assert context == [
        "human",
        "Results of the tasks this one depends on:\n\n"
        "## step-2\nEV cells got 12% cheaper\n\n## notes\nplain notes",
    ]
    assert task == ["human", "Write the report"]


async def test_a_task_without_inputs_gets_only_its_messages() -> None:
    got = await seen(None)

    assert got["keys"] == ["messages"]
    assert [m[0] for m in got["messages"]] == ["system", "human"]


async def test_an_input_over_the_limit_is_cut_saying_so() -> None:
    got = await seen({"big": b"x" * (MAX_INPUT_CHARS + 10)})

    assert got["inputs"]["big"].endswith("[cut: 10 more chars]")
    assert got["inputs"]["big"].startswith("x" * MAX_INPUT_CHARS)


async def test_the_example_reporter_refuses_a_run_without_its_steps_findings() -> None:
    with pytest.raises(FatalError, match="the reporter got no research findings"):
        await HandlerEnvironment().run(HANDLER, payload("reporter"))
