"""DeerFlow 2.0's SubagentExecutor drop-in against a real cluster: one controller, one agent
running the ``subagent`` handler with the test sub-agents of ``subagent_fixtures`` (real
langchain-core Runnables)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from deerflow_bench import Cluster
from deerflow_controller.client import AsyncClient
from deerflow_dropins.subagents import (
    SubagentConfig,
    SubagentExecutor,
    SubagentStatus,
    cleanup_background_task,
    get_background_task_result,
    request_cancel_background_task,
    subagent_events,
)
from tests.dropins.subagent_fixtures import CANCELLED_DIR_ENV

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = "tests.dropins.subagent_fixtures"
NAMES = ("two_turns", "endless", "hungry", "stuck", "broken")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    marker_dir = tmp_path_factory.mktemp("subagents")
    env = {
        "PYTHONPATH": str(ROOT),
        "DEERFLOW_SUBAGENTS": ",".join(f"{n}={FIXTURES}:{n}" for n in NAMES),
        CANCELLED_DIR_ENV: str(marker_dir),
    }
    agent_args = ["--slots", "4", "--handler", "deerflow_dropins.subagent_handler:subagent"]
    async with Cluster(1, agent_args=agent_args, agent_env=env) as c:
        async with AsyncClient(c.address) as client:
            await client.agents(wait_for=1, timeout_s=30)
        c.marker_dir = marker_dir  # type: ignore[attr-defined]
        yield c


def executor(cluster: Cluster, name: str, **config: Any) -> SubagentExecutor:
    budget = config.pop("token_budget", None)
    cfg = SubagentConfig(name=name, description="test", **config)
    return SubagentExecutor(cfg, [], address=cluster.address, token_budget=budget)


async def test_a_run_completes_with_its_answer_usage_and_deerflows_event_sequence(
    cluster: Cluster,
) -> None:
    ex = executor(cluster, "two_turns", timeout_seconds=30)

    events = [e async for e in ex.stream("Find the delivery market share", task_id="call_1")]

    assert events[0]["type"] == "task_started"
    assert events[0]["task_id"] == "call_1"  # the lead's tool-call id, as DeerFlow streams it
    assert events[-1]["type"] == "task_completed"
    assert events[-1]["result"] == "finding 2"
    assert events[-1]["usage"]["total_tokens"] == 200
    # The first turn's report (sent at once) streams while the run goes on.
    progress = [e for e in events if e["type"] == "task_progress"]
    assert progress and progress[0]["detail"].startswith("turn 1"), events
    assert events.index(progress[0]) < len(events) - 1
    messages = [e for e in events if e["type"] == "task_running" and e["message"]]
    assert [(e["message_index"], e["message"]["content"]) for e in messages] == [
        (1, "finding 1"),
        (2, "finding 2"),
    ]
    [run] = [r for r in _runs() if r.external_task_id == "call_1"]
    assert (run.status, run.result, run.stop_reason) == (
        SubagentStatus.COMPLETED,
        "finding 2",
        None,
    )
    assert run.token_usage_records[0]["total_tokens"] == 200
    cleanup_background_task(run.task_id)
    assert get_background_task_result(run.task_id) is None


async def test_a_run_past_timeout_seconds_ends_timed_out_and_the_agent_stops_it(
    cluster: Cluster,
) -> None:
    ex = executor(cluster, "stuck", timeout_seconds=1)

    events = [e["type"] async for e in ex.stream("Wait for ever")]

    assert [e for e in events if e != "task_progress"] == [
        "task_started",
        "task_running",
        "task_timed_out",
    ]
    marker = Path(cluster.marker_dir, "stuck-was-cancelled")  # type: ignore[attr-defined]
    # The agent is another process and a file is the only sign it gives: polled, with a deadline.
    async with asyncio.timeout(10):
        while not await asyncio.to_thread(marker.exists):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_max_turns_caps_a_run_and_execute_blocks_until_the_outcome(cluster: Cluster) -> None:
    ex = executor(cluster, "endless", max_turns=4, timeout_seconds=30)

    run = await asyncio.to_thread(ex.execute, "Never stop")

    assert (run.status, run.stop_reason, run.result) == (
        SubagentStatus.COMPLETED,
        "turn_capped",
        "finding 4",
    )
    assert len(run.ai_messages or []) == 4


async def test_the_token_budget_caps_a_run(cluster: Cluster) -> None:
    ex = executor(cluster, "hungry", max_turns=100, timeout_seconds=30, token_budget=1000)

    run = await ex.aexecute("Spend tokens")

    assert (run.status, run.stop_reason) == (SubagentStatus.COMPLETED, "token_capped")
    assert run.token_usage_records == [
        {"model": "fake-model", "input_tokens": 1185, "output_tokens": 15, "total_tokens": 1200}
    ]


async def test_a_broken_or_unknown_sub_agent_fails_with_a_sentence(cluster: Cluster) -> None:
    broken = await executor(cluster, "broken", timeout_seconds=30).aexecute("x")
    unknown = await executor(cluster, "nobody", timeout_seconds=30).aexecute("x")

    assert broken.status is SubagentStatus.FAILED
    assert "sub-agent 'broken' failed after 0 turn(s): the search API key is missing" in str(
        broken.error
    )
    assert unknown.status is SubagentStatus.FAILED
    assert "no sub-agent named 'nobody' is installed" in str(unknown.error)


async def test_the_lead_cancels_a_running_sub_agent(cluster: Cluster) -> None:
    ex = executor(cluster, "stuck", timeout_seconds=60)
    execution_id = ex.execute_async("Wait", task_id="call_9")
    seen: list[str] = []

    async for event in subagent_events(execution_id):
        seen.append(event["type"])
        if event["type"] == "task_running":
            assert get_background_task_result(execution_id).status is SubagentStatus.RUNNING  # type: ignore[union-attr]
            request_cancel_background_task(execution_id)

    assert [s for s in seen if s != "task_progress"] == [
        "task_started",
        "task_running",
        "task_cancelled",
    ]
    assert get_background_task_result(execution_id).status is SubagentStatus.CANCELLED  # type: ignore[union-attr]


async def test_only_data_is_sent_tool_names_filtered_and_the_model_inherited() -> None:
    config = SubagentConfig(
        name="general-purpose",
        system_prompt="You research.",
        tools=["web_search", "crawl", "task"],
        max_turns=150,
        timeout_seconds=1800,
    )
    tools = [SimpleNamespace(name=n) for n in ("web_search", "crawl", "task", "bash")]

    ex = SubagentExecutor(
        config, tools, parent_model="gpt-4o", trace_id="t1", address="127.0.0.1:1"
    )

    assert ex.payload("go") == {
        "subagent": "general-purpose",
        "task": "go",
        "system_prompt": "You research.",
        "tools": ["web_search", "crawl"],
        "model": "gpt-4o",
        "max_turns": 150,
        "token_budget": 2_000_000,
        "metadata": {"trace_id": "t1"},
    }


async def test_the_token_budget_can_be_set_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEERFLOW_CONTROLLER", "127.0.0.1:1")
    monkeypatch.setenv("DEERFLOW_SUBAGENT_TOKEN_BUDGET", "5000")
    assert SubagentExecutor(SubagentConfig(name="x"), []).token_budget == 5000

    monkeypatch.setenv("DEERFLOW_SUBAGENT_TOKEN_BUDGET", "lots")
    with pytest.raises(ValueError, match="must be a whole number of tokens, got 'lots'"):
        SubagentExecutor(SubagentConfig(name="x"), [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timeout_seconds": 0}, "timeout_seconds must be in"),
        ({"max_turns": 0}, "max_turns must be an int >= 1"),
        ({"name": ""}, "needs a name"),
    ],
)
async def test_a_bad_config_is_refused_when_the_executor_is_made(
    change: dict[str, Any], message: str
) -> None:
    config = SubagentConfig(**{"name": "x", **change})

    with pytest.raises(ValueError, match=message):
        SubagentExecutor(config, [])


def _runs() -> list[Any]:
    from deerflow_dropins.subagents import list_background_tasks

    return list_background_tasks()
