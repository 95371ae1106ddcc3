"""The sub-agents of the DeerFlow-shaped example (``deerflow demo --deerflow``), installed on
the example's agents by name through ``DEERFLOW_SUBAGENTS`` (what an operator would set)::

    DEERFLOW_SUBAGENTS="researcher=deerflow_bench.example_subagents:researcher,\\
    reporter=deerflow_bench.example_subagents:reporter"

Both are factories ``f(SubagentRequest) -> Runnable`` run by the agent's ``subagent`` handler;
every model and tool call they make is itself a task on the cluster, through the drop-ins
(``ClusterChatModel``, ``web_search``, ``crawl_tool``), found through ``$DEERFLOW_CONTROLLER``
on the agent.

- ``researcher``: one research step as a small ReAct loop: the model, offered ``web_search`` and
  ``crawl_tool``, calls tools until it answers in text (at most :data:`MAX_TOOL_ROUNDS` rounds,
  then one answer without tools). After a ``web_search`` it reads the top hit in full with
  ``crawl_tool``, as DeerFlow's researcher is told to (the simulated model calls one tool a turn
  and always the first offered, so the crawl is the researcher's, not the model's choice).
- ``reporter``: reads every step's findings from the run's ``inputs`` (the ``subagent``
  handler's inputs feature: the task's ``depends_on`` outputs), writes the report with one model
  call, and cites each step by id with an excerpt of its findings.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool

from deerflow_dropins.chat_model import ClusterChatModel
from deerflow_dropins.subagent_handler import SubagentRequest
from deerflow_dropins.tools import crawl_tool, get_web_search_tool

__all__ = ["DEFAULT_MODEL", "MAX_TOOL_ROUNDS", "excerpt", "reporter", "researcher"]

DEFAULT_MODEL = "sim-model"
MAX_TOOL_ROUNDS = 3
"""Model turns that may call tools in one research step; then one answer without tools."""
EXCERPT_CHARS = 160
MAX_TOKENS = 300

RESEARCHER_PROMPT = (
    "You are a researcher. Use web_search to find sources and crawl_tool to read a page in "
    "full, then answer with your findings on the step, citing the URLs you used."
)
REPORTER_PROMPT = (
    "You are a professional reporter. Write a concise report from the research steps' findings "
    "below; cite each step by its id in square brackets."
)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first ``limit`` characters of ``text`` on one line (how the report cites a step)."""
    return " ".join(text.split())[:limit]


def _model(request: SubagentRequest) -> ClusterChatModel:
    return ClusterChatModel(model=request.model or DEFAULT_MODEL, max_tokens=MAX_TOKENS)


def _top_url(search_content: str) -> str | None:
    """The first hit's URL in ``web_search``'s content (a JSON list of results), if any."""
    try:
        hits = json.loads(search_content)
    except ValueError:
        return None
    if isinstance(hits, list) and hits and isinstance(hits[0], dict):
        url = hits[0].get("url")
        return url if isinstance(url, str) and url else None
    return None


async def _call_tool(
    tools: dict[str, BaseTool], call: dict[str, Any], config: RunnableConfig
) -> ToolMessage:
    tool = tools.get(call["name"])
    if tool is None:
        return ToolMessage(f"Error: no tool named {call['name']!r}", tool_call_id=call["id"])
    answer = await tool.ainvoke({**call, "type": "tool_call"}, config)
    message = (
        answer
        if isinstance(answer, ToolMessage)
        else ToolMessage(str(answer), tool_call_id=call["id"])
    )
    if call["name"] == "web_search" and isinstance(message.content, str):
        url = _top_url(message.content)
        if url is not None:
            page = await crawl_tool.ainvoke({"url": url}, config)
            message = ToolMessage(
                f"{message.content}\n\nThe top result, read with crawl_tool:\n{page}",
                tool_call_id=call["id"],
                name=call["name"],
            )
    return message


def researcher(request: SubagentRequest) -> Runnable[Any, Any]:
    """One research step (a factory: the model comes from the request, as data)."""
    model = _model(request)
    tools: dict[str, BaseTool] = {"web_search": get_web_search_tool(3), "crawl_tool": crawl_tool}
    with_tools = model.bind_tools(list(tools.values()))

    async def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        messages: list[BaseMessage] = list(state["messages"])
        if not any(isinstance(m, SystemMessage) for m in messages):
            messages.insert(0, SystemMessage(content=RESEARCHER_PROMPT))
        for _ in range(MAX_TOOL_ROUNDS):
            answer = await with_tools.ainvoke(messages, config)
            messages.append(answer)
            if not answer.tool_calls:
                return {"messages": messages}
            for call in answer.tool_calls:
                messages.append(await _call_tool(tools, dict(call), config))
        messages.append(await model.ainvoke(messages, config))
        return {"messages": messages}

    return RunnableLambda(run, name="researcher")


def compose_report(title: str, body: str, findings: dict[str, str]) -> str:
    """The report: a title, the model's text, and one citation line per research step."""
    lines = [f"# {title}", "", body.strip(), "", "## Research steps cited"]
    lines += [f"- [{step}] {excerpt(text)}" for step, text in findings.items()]
    return "\n".join(lines)


def reporter(request: SubagentRequest) -> Runnable[Any, Any]:
    """The report step: one model call over every step's findings (the run's ``inputs``)."""
    model = _model(request)

    async def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        findings: dict[str, str] = dict(state.get("inputs") or {})
        if not findings:
            raise ValueError(
                "the reporter got no research findings: submit it with depends_on=[the steps] "
                "and inputs='all'"
            )
        messages: list[BaseMessage] = [SystemMessage(content=REPORTER_PROMPT)]
        messages += [m for m in state["messages"] if not isinstance(m, SystemMessage)]
        answer = await model.ainvoke(messages, config)
        report = compose_report(request.task.splitlines()[0], str(answer.content), findings)
        return {"messages": [*messages, answer, AIMessage(content=report)]}

    return RunnableLambda(run, name="reporter")
