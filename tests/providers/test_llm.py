"""The llm handler against the simulated OpenAI-compatible provider."""

from __future__ import annotations

import json
import socket

import pytest

from deerflow_agent.providers import llm
from deerflow_common import signals
from deerflow_simulator import KeyLimits, Simulator

from .conftest import KEY, SIM_ALLOW, SimFactory, fatal, retryable, run, start_brownout

VOCABULARY = {v for k, v in vars(signals).items() if k.isupper() and isinstance(v, str)}


def chat(sim: Simulator, **extra: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "model": "sim-gpt",
        "messages": [{"role": "user", "content": "What is DeerFlow's market share?"}],
        "api_key": KEY,
        "base_url": sim.url,
    }
    payload.update(extra)
    return payload


async def test_a_chat_completion_returns_content_model_and_usage(sim: Simulator) -> None:
    result = await run(llm, chat(sim, max_tokens=64))

    out = json.loads(result.output)
    assert out["content"]
    assert out["model"] == "sim-gpt"
    usage = out["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["completion_tokens"] <= 64


async def test_a_success_reports_status_latency_and_token_usage_as_signals(
    sim: Simulator,
) -> None:
    result = await run(llm, chat(sim))

    usage = json.loads(result.output)["usage"]
    metadata = result.metadata
    assert metadata[signals.HTTP_STATUS] == "200"
    assert float(metadata[signals.LATENCY_S]) >= 0
    assert metadata[signals.PROMPT_TOKENS] == str(usage["prompt_tokens"])
    assert metadata[signals.COMPLETION_TOKENS] == str(usage["completion_tokens"])
    assert metadata[signals.TOTAL_TOKENS] == str(usage["total_tokens"])
    assert set(metadata) <= VOCABULARY


async def test_a_success_reports_the_keys_rate_limits_with_resets_in_seconds(
    simulator: SimFactory,
) -> None:
    async with simulator(keys={KEY: KeyLimits(rpm=600, tpm=100_000)}) as sim:
        result = await run(llm, chat(sim))

    metadata = result.metadata
    assert metadata[signals.LIMIT_REQUESTS] == "600"
    assert metadata[signals.LIMIT_TOKENS] == "100000"
    assert float(metadata[signals.REMAINING_REQUESTS]) < 600
    assert float(metadata[signals.RESET_REQUESTS_S]) > 0
    assert float(metadata[signals.REMAINING_TOKENS]) < 100_000
    assert float(metadata[signals.RESET_TOKENS_S]) > 0
    assert set(metadata) <= VOCABULARY


async def test_a_prompt_is_sent_as_a_single_user_message(sim: Simulator) -> None:
    payload = chat(sim, prompt="Summarise the delivery market.")
    del payload["messages"]

    out = json.loads((await run(llm, payload)).output)

    assert out["content"]
    assert out["usage"]["prompt_tokens"] == len("Summarise the delivery market.") // 4


async def test_a_429_is_retryable_with_the_providers_retry_after_and_rate_limit_signals(
    simulator: SimFactory,
) -> None:
    async with simulator(keys={KEY: KeyLimits(rpm=1)}) as sim:
        await run(llm, chat(sim))  # takes the one request the minute allows
        error = await retryable(llm, chat(sim))

    metadata = error.metadata
    assert metadata[signals.HTTP_STATUS] == "429"
    assert metadata[signals.ERROR_CODE] == "rate_limit_exceeded"
    assert error.retry_after_s == float(metadata[signals.RETRY_AFTER_S]) > 0
    assert metadata[signals.LIMIT_REQUESTS] == "1"
    assert metadata[signals.REMAINING_REQUESTS] == "0"
    assert float(metadata[signals.RESET_REQUESTS_S]) > 0
    assert "429" in error.message and sim.url in error.message
    assert set(metadata) <= VOCABULARY


async def test_a_burst_rate_429_is_retryable_and_names_its_code_for_a_smaller_budget(
    simulator: SimFactory,
) -> None:
    burst = KeyLimits(burst_slope=0.0, burst_floor_rps=1.0, burst_window_s=1.0)
    async with simulator(keys={KEY: burst}) as sim:
        await run(llm, chat(sim))  # the floor allows one request per window from idle
        error = await retryable(llm, chat(sim))

    assert error.metadata[signals.HTTP_STATUS] == "429"
    assert error.metadata[signals.ERROR_CODE] == "limit_burst_rate"
    assert error.retry_after_s > 0
    assert "ramp up" in error.message


async def test_a_rejected_key_is_fatal_and_the_message_never_contains_the_key(
    sim: Simulator,
) -> None:
    wrong = "sk-wrong-key-9876543210-abcdef"

    error = await fatal(llm, chat(sim, api_key=wrong))

    assert error.metadata[signals.HTTP_STATUS] == "401"
    assert error.metadata[signals.ERROR_CODE] == "invalid_api_key"
    assert "401" in error.message and "DEERFLOW_LLM_API_KEY" in error.message
    assert wrong not in error.message and wrong[:12] not in error.message


async def test_a_5xx_during_a_brownout_is_retryable(sim: Simulator) -> None:
    await start_brownout(sim)

    error = await retryable(llm, chat(sim))

    assert error.metadata[signals.HTTP_STATUS] in {"500", "502", "503"}
    assert set(error.metadata) <= VOCABULARY


async def test_an_unreachable_provider_is_retryable() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    error = await retryable(
        llm, {"model": "m", "prompt": "hi", "api_key": KEY, "base_url": f"http://127.0.0.1:{port}"}
    )

    assert f"127.0.0.1:{port}" in error.message
    assert signals.HTTP_STATUS not in error.metadata
    assert KEY not in error.message


async def test_a_missing_key_is_fatal_and_names_the_variable_to_set(sim: Simulator) -> None:
    payload = chat(sim)
    del payload["api_key"]

    error = await fatal(llm, payload)

    assert "DEERFLOW_LLM_API_KEY" in error.message


async def test_the_environment_supplies_the_url_and_key_the_payload_leaves_out(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEERFLOW_LLM_BASE_URL", sim.url)
    monkeypatch.setenv("DEERFLOW_LLM_API_KEY", KEY)

    result = await run(llm, {"model": "sim-gpt", "prompt": "hello"})

    assert result.metadata[signals.HTTP_STATUS] == "200"


async def test_a_base_url_ending_in_v1_is_not_given_a_second_v1(sim: Simulator) -> None:
    result = await run(llm, chat(sim, base_url=f"{sim.url}/v1"))

    assert json.loads(result.output)["content"]


@pytest.mark.parametrize(
    ("change", "field"),
    [({"model": None}, "model"), ({"messages": []}, "messages"), ({"max_tokens": 0}, "max_tokens")],
)
async def test_a_malformed_payload_is_fatal_and_names_the_field(
    sim: Simulator, change: dict[str, object], field: str
) -> None:
    payload = {k: v for k, v in {**chat(sim), **change}.items() if v is not None}

    error = await fatal(llm, payload)

    assert field in error.message


SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "web_search",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}


async def test_offered_tools_reach_the_provider_and_its_tool_calls_come_back(
    sim: Simulator,
) -> None:
    asked = json.loads((await run(llm, chat(sim, tools=[SEARCH_TOOL], temperature=0))).output)
    messages = [
        {"role": "user", "content": "What is DeerFlow's market share?"},
        {"role": "assistant", "content": None, "tool_calls": asked["tool_calls"]},
        {"role": "tool", "tool_call_id": asked["tool_calls"][0]["id"], "content": "[]"},
    ]
    answered = json.loads(
        (await run(llm, chat(sim, messages=messages, tools=[SEARCH_TOOL]))).output
    )

    (call,) = asked["tool_calls"]
    assert asked["finish_reason"] == "tool_calls" and asked["content"] == ""
    assert call["function"]["name"] == "web_search"
    assert set(json.loads(call["function"]["arguments"])) == {"query"}
    assert answered["content"] and "tool_calls" not in answered


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ({"tools": []}, "'tools'"),
        ({"tool_choice": 3}, "'tool_choice'"),
        ({"temperature": float("nan")}, "'temperature'"),
        ({"top_p": 1.5}, "'top_p'"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "'stop'"),
    ],
)
async def test_a_bad_passed_option_is_fatal_and_names_it(
    sim: Simulator, option: dict[str, object], field: str
) -> None:
    error = await fatal(llm, chat(sim, **option))

    assert field in error.message


async def test_a_call_that_asked_for_inputs_answers_from_them_and_names_them(
    sim: Simulator,
) -> None:
    from deerflow_agent.providers import LLM_INPUT_CHARS
    from deerflow_agent.testing import HandlerEnvironment

    finding = json.dumps({"content": "Step 1 found that Meituan leads with 69 %."}).encode()
    page = b"x" * (LLM_INPUT_CHARS * 3)  # a long crawl: cut, saying so
    payload = json.dumps(chat(sim, max_tokens=64)).encode()
    alone = json.loads((await run(llm, chat(sim, max_tokens=64))).output)

    result = await HandlerEnvironment(http_allow=SIM_ALLOW).run_result(
        llm, payload, inputs={"step-1": finding, "crawl-2": page}
    )

    out = json.loads(result.output)
    assert out["context_from"] == ["step-1", "crawl-2"]  # depends_on order
    # The simulator counts a prompt token per 4 characters: the context reached the provider,
    # the finding as its text, the page cut at LLM_INPUT_CHARS.
    added = out["usage"]["prompt_tokens"] - alone["usage"]["prompt_tokens"]
    assert LLM_INPUT_CHARS // 4 < added < (LLM_INPUT_CHARS + 400) // 4
    assert "context_from" not in alone
