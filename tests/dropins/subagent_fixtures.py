"""Sub-agents for the sub-agent tests, installed on test agents through DEERFLOW_SUBAGENTS
(``name=tests.dropins.subagent_fixtures:attr``). Each is a real langchain-core Runnable whose
turns are calls to langchain-core's fake chat model, so usage and turns are exact."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from deerflow_dropins.subagent_handler import SubagentRequest

CANCELLED_DIR_ENV = "SUBAGENT_TEST_DIR"
"""Where ``stuck`` writes a file when it is cancelled (set on the agent by the test)."""


def _model(tokens_per_answer: int, answers: int = 1000) -> GenericFakeChatModel:
    usage = {"input_tokens": tokens_per_answer - 5, "output_tokens": 5}
    return GenericFakeChatModel(
        messages=iter(
            AIMessage(
                content=f"finding {i + 1}",
                usage_metadata={**usage, "total_tokens": tokens_per_answer},
                response_metadata={"model_name": "fake-model"},
            )
            for i in range(answers)
        )
    )


def _loop(turns: int, tokens_per_answer: int = 100) -> Runnable[Any, Any]:
    """An agent that calls its model ``turns`` times and answers with the last reply."""

    async def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        model = _model(tokens_per_answer)
        messages: list[BaseMessage] = list(state["messages"])
        for _ in range(turns):
            messages.append(await model.ainvoke(messages, config))
        return {"messages": messages}

    return RunnableLambda(run)


def _blocking_run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
    model = _model(100)
    messages: list[BaseMessage] = list(state["messages"])
    for _ in range(10_000):
        messages.append(model.invoke(messages, config))
    return {"messages": messages}


blocking = RunnableLambda(_blocking_run)
"""A sync agent (langchain-core runs it in a worker thread) that never finishes by itself."""


def two_turns(request: SubagentRequest) -> Runnable[Any, Any]:
    """A factory: finishes in two turns."""
    return _loop(2)


endless = _loop(10_000)
"""Never finishes by itself: only max_turns stops it."""

hungry = _loop(10_000, tokens_per_answer=400)
"""400 tokens a turn, never finishes: only the token budget (or max_turns) stops it."""


async def _stuck(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
    model = _model(10)
    messages: list[BaseMessage] = [
        *state["messages"],
        await model.ainvoke(state["messages"], config),
    ]
    try:
        await asyncio.Event().wait()  # hangs until cancelled
    finally:
        marker = os.environ.get(CANCELLED_DIR_ENV)
        if marker:
            # A few bytes, in a cancelled task's finally: no await wanted here.
            Path(marker, "stuck-was-cancelled").write_text("yes")  # noqa: ASYNC240
    return {"messages": messages}


stuck = RunnableLambda(_stuck)
"""One turn, then waits for ever: only its timeout ends it."""


async def _broken(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
    raise ValueError("the search API key is missing")


broken = RunnableLambda(_broken)
