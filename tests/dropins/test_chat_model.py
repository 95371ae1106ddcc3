"""The chat model: each generation an ``llm`` task on its rate key, answered with the provider's
usage; and DeerFlow 1.x's ``get_llm_by_type`` building it from DeerFlow's configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from deerflow_dropins._cluster import CONTROLLER_ENV, close_all
from deerflow_dropins.chat_model import ClusterChatModel, get_llm_by_type, reset_llm_cache
from deerflow_dropins.tools import ClusterCrawlTool, get_web_search_tool

from .conftest import DropinCluster

MODEL = "sim-model"
PROMPT = [SystemMessage("You are terse."), HumanMessage("Summarise EV battery supply chains.")]


def _check_answer(message: AIMessage) -> None:
    assert isinstance(message, AIMessage)
    assert isinstance(message.content, str) and message.content
    usage = message.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert message.response_metadata["model_name"] == MODEL
    assert message.response_metadata["deerflow_agent_id"] == "agent-1"


def test_invoke_runs_one_llm_task_on_the_models_rate_key(dropin_cluster: DropinCluster) -> None:
    model = ClusterChatModel(model=MODEL, max_tokens=64, cluster=dropin_cluster.conn)
    key = f"llm/acct-llm/{MODEL}"
    before = dropin_cluster.rate_key_admitted(key)

    _check_answer(model.invoke(PROMPT))

    assert model.rate_key() == key
    assert dropin_cluster.rate_key_admitted(key) == before + 1


async def test_ainvoke_answers_the_same_way_on_its_own_account(
    dropin_cluster: DropinCluster,
) -> None:
    model = ClusterChatModel(model=MODEL, account="team-b", cluster=dropin_cluster.conn)
    before = dropin_cluster.rate_key_admitted(f"llm/team-b/{MODEL}")

    message = await model.ainvoke(PROMPT)

    _check_answer(message)
    assert dropin_cluster.rate_key_admitted(f"llm/team-b/{MODEL}") == before + 1


def test_the_token_estimate_is_prompt_characters_over_four_plus_the_completion(
    dropin_cluster: DropinCluster,
) -> None:
    chars = sum(len(str(m.content)) for m in PROMPT)
    capped = ClusterChatModel(model=MODEL, max_tokens=100, cluster=dropin_cluster.conn)
    uncapped = ClusterChatModel(model=MODEL, cluster=dropin_cluster.conn)

    assert capped._task(dropin_cluster.conn, PROMPT).est_tokens == chars / 4 + 100
    assert uncapped._task(dropin_cluster.conn, PROMPT).est_tokens == chars / 4 + 512


@pytest.fixture
def deerflow_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        "BASIC_MODEL:\n"
        "  base_url: https://ark.example/api/v3\n"
        f"  model: {MODEL}\n"
        "  api_key: $NOT_SENT\n"
        "  max_tokens: 256\n"
        "  verify_ssl: false\n"
    )
    monkeypatch.setenv("BASIC_MODEL__max_retries", "1")
    reset_llm_cache()
    yield conf
    reset_llm_cache()
    close_all()


def test_get_llm_by_type_builds_the_model_from_deerflows_conf_and_environment(
    dropin_cluster: DropinCluster, deerflow_conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONTROLLER_ENV, dropin_cluster.address)

    model = get_llm_by_type("basic", conf_path=deerflow_conf)

    assert isinstance(model, ClusterChatModel)
    assert (model.model_name, model.max_tokens, model.max_retries) == (MODEL, 256, 1)
    assert get_llm_by_type("basic", conf_path=deerflow_conf) is model  # cached, as DeerFlow's
    _check_answer(model.invoke("hello"))
    with pytest.raises(ValueError, match="No configuration found for LLM type: vision"):
        get_llm_by_type("vision", conf_path=deerflow_conf)
    with pytest.raises(ValueError, match="Unknown LLM type: huge"):
        get_llm_by_type("huge", conf_path=deerflow_conf)  # type: ignore[arg-type]


async def test_a_stop_sequence_cuts_the_answer(dropin_cluster: DropinCluster) -> None:
    model = ClusterChatModel(model=MODEL, cluster=dropin_cluster.conn)
    full = await model.ainvoke(PROMPT)  # the simulator's reply depends on the prompt alone
    text = str(full.content)
    stop = text[len(text) // 2 : len(text) // 2 + 5]

    cut = await model.ainvoke(PROMPT, stop=[stop])

    assert stop and str(cut.content) == text[: text.index(stop)]


async def test_a_react_turn_calls_a_cluster_tool_and_answers_from_its_result(
    dropin_cluster: DropinCluster,
) -> None:
    search = get_web_search_tool(2, cluster=dropin_cluster.conn)
    crawl = ClusterCrawlTool(cluster=dropin_cluster.conn)
    model = ClusterChatModel(model=MODEL, cluster=dropin_cluster.conn)
    messages: list[BaseMessage] = [HumanMessage("Find EV battery supply chain news.")]

    asked = await model.bind_tools([search, crawl]).ainvoke(messages)
    named = await model.bind_tools([search, crawl], tool_choice="crawl_tool").ainvoke(messages)

    assert isinstance(asked, AIMessage) and asked.content == ""
    (call,) = asked.tool_calls
    assert call["name"] == "web_search" and set(call["args"]) == {"query"}
    assert named.tool_calls[0]["name"] == "crawl_tool"
    result = await search.ainvoke(call)  # a ToolMessage, the search run on the cluster
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    answer = await model.bind_tools([search, crawl]).ainvoke([*messages, asked, result])
    assert isinstance(answer, AIMessage) and not answer.tool_calls
    assert isinstance(answer.content, str) and answer.content
