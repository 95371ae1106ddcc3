"""The agent-side ``subagent`` handler run in the handler test environment, with the real
langchain-core: turn and token budgets, usage, progress, and its refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deerflow_agent import FatalError, HandlerEnvironment
from deerflow_dropins.subagent_handler import SubagentRequest, make_subagent_handler
from tests.dropins import subagent_fixtures as fx

HANDLER = make_subagent_handler(
    {
        "two_turns": fx.two_turns,
        "endless": fx.endless,
        "hungry": fx.hungry,
        "broken": fx.broken,
        "blocking": fx.blocking,
        "not_a_runnable": 42,
    }
)


def payload(name: str, **fields: Any) -> bytes:
    return json.dumps({"subagent": name, "task": "find the market share", **fields}).encode()


async def run(env: HandlerEnvironment, name: str, **fields: Any) -> dict[str, Any]:
    result = await env.run_result(HANDLER, payload(name, **fields))
    out: dict[str, Any] = json.loads(result.output)
    out["_metadata"] = result.metadata
    return out


async def test_a_run_that_finishes_completes_with_its_last_answer_and_its_usage() -> None:
    env = HandlerEnvironment()

    out = await run(env, "two_turns")

    assert (out["status"], out["result"], out["stop_reason"]) == ("completed", "finding 2", None)
    assert out["turns"] == 2
    assert out["token_usage"] == {"input_tokens": 190, "output_tokens": 10, "total_tokens": 200}
    assert out["token_usage_records"] == [
        {"model": "fake-model", "input_tokens": 190, "output_tokens": 10, "total_tokens": 200}
    ]
    assert [m["content"] for m in out["ai_messages"]] == ["finding 1", "finding 2"]
    assert out["_metadata"]["usage.total_tokens"] == "200"
    assert env.progress[0] == (0.02, "turn 1/50")  # one heartbeat per turn, and per answer
    assert len(env.progress) == 4


async def test_max_turns_caps_a_run_that_never_ends_and_keeps_its_partial_answer() -> None:
    out = await run(HandlerEnvironment(), "endless", max_turns=3)

    assert (out["status"], out["stop_reason"], out["turns"]) == ("completed", "turn_capped", 3)
    assert out["result"] == "finding 3"


async def test_a_blocking_sub_agent_is_capped_and_reports_progress_through_the_loop() -> None:
    env = HandlerEnvironment()

    out = await run(env, "blocking", max_turns=2)

    assert (out["stop_reason"], out["result"]) == ("turn_capped", "finding 2")
    assert [m for _, m in env.progress][:2] == ["turn 1/2", "turn 1: 100 tokens so far"]


async def test_the_token_budget_stops_the_run_before_the_next_turn() -> None:
    out = await run(HandlerEnvironment(), "hungry", token_budget=1000, max_turns=100)

    assert (out["status"], out["stop_reason"]) == ("completed", "token_capped")
    assert out["turns"] == 3  # 400 + 400 < 1000 <= 1200: the third answer crosses the budget
    assert out["token_usage"]["total_tokens"] == 1200


async def test_a_sub_agent_that_raises_fails_the_task_as_fatal_naming_it() -> None:
    with pytest.raises(FatalError, match="sub-agent 'broken' failed after 0 turn"):
        await HandlerEnvironment().run(HANDLER, payload("broken"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (json.dumps({"task": "x"}).encode(), "'subagent' must be a non-empty string"),
        (payload("endless", max_turns=0), "'max_turns' must be an integer from 1"),
        (payload("endless", tools="search"), "'tools' must be null or a list"),
        (payload("nobody"), "no sub-agent named 'nobody' is installed on this agent"),
        (payload("not_a_runnable"), "neither a Runnable nor a factory"),
    ],
)
async def test_a_bad_request_is_refused_with_one_sentence(body: bytes, message: str) -> None:
    with pytest.raises(FatalError, match=message):
        await HandlerEnvironment().run(HANDLER, body)


def test_the_request_carries_tools_model_and_metadata_as_data() -> None:
    request = SubagentRequest.from_payload(
        payload("x", tools=["web_search"], model="gpt-4o", metadata={"trace_id": "t1"})
    )

    assert (request.tools, request.model, dict(request.metadata)) == (
        ("web_search",),
        "gpt-4o",
        {"trace_id": "t1"},
    )
