"""DeerFlow 1.x's tools on the cluster: the same names, argument schemas and output shapes,
sync and async, errors as DeerFlow's strings, every call a task on its rate key."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import IO, Annotated, Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel, Field

from deerflow_dropins import tools as dropin_tools
from deerflow_dropins._cluster import CONTROLLER_ENV
from deerflow_dropins.tools import (
    ClusterCrawlTool,
    ClusterPythonReplTool,
    clean_search_results,
    crawl_markdown,
    get_web_search_tool,
)

from .conftest import DropinCluster

# ------------------------------------------------------------------ DeerFlow's interfaces
# DeerFlow 1.x's tools as an LLM sees them (main-1.x: src/tools/crawl.py, python_repl.py; the
# search tool's schema is langchain-community's TavilyInput), written out here as the facts the
# drop-ins must match.


@tool
def crawl_tool(
    url: Annotated[str, "The url to crawl."],
) -> str:
    """Use this to crawl a url and get a readable content in markdown format."""
    return url


@tool
def python_repl_tool(  # type: ignore[no-untyped-def]  # DeerFlow's has no return type
    code: Annotated[str, "The python code to execute to do further analysis or calculation."],
):
    """Use this to execute python code and do data analysis or calculation. If you want to see the output of a value,
    you should print it out with `print(...)`. This is visible to the user."""  # noqa: E501
    return code


class _TavilyInput(BaseModel):
    """Input for the Tavily tool."""

    query: str = Field(description="search query to look up")


TAVILY_DESCRIPTION = (
    "A search engine optimized for comprehensive, accurate, and trusted results. "
    "Useful for when you need to answer questions about current events. "
    "Input should be a search query."
)
PAGE_KEYS = {"type", "title", "url", "content", "score"}


def _llm_view(t: BaseTool) -> dict[str, Any]:
    """What a chat model is given for a tool: its name, description and JSON schema."""
    return {
        "name": t.name,
        "description": t.description,
        "schema": t.tool_call_schema.model_json_schema(),  # type: ignore[union-attr]
        "args": t.args,
    }


def test_the_tools_show_an_llm_exactly_deerflows_names_descriptions_and_schemas() -> None:
    search = get_web_search_tool(3)
    reference_search = _llm_view(crawl_tool) | {
        "name": "web_search",
        "description": TAVILY_DESCRIPTION,
        "args": {
            "query": {"description": "search query to look up", "title": "Query", "type": "string"}
        },
    }
    schema = _TavilyInput.model_json_schema()
    reference_search["schema"] = {
        **schema,
        "title": "web_search",
        "description": TAVILY_DESCRIPTION,
    }

    assert _llm_view(search) == reference_search
    assert search.response_format == "content_and_artifact"
    assert _llm_view(dropin_tools.crawl_tool) == _llm_view(crawl_tool)
    assert _llm_view(dropin_tools.python_repl_tool) == _llm_view(python_repl_tool)


# ------------------------------------------------------------------ shaping, no cluster


def test_search_results_are_cleaned_as_deerflow_cleans_them() -> None:
    hits = [
        {"title": "a", "url": "https://a", "content": "x" * 30, "score": 0.5},
        {"title": "dup", "url": "https://a", "content": "again", "score": 0.9},
        {
            "title": "b",
            "url": "https://b",
            "content": "a data:image/png;base64,AA= z",
            "score": 0.8,
        },
        {"title": "low", "url": "https://c", "content": "c", "score": 0.1},
    ]

    cleaned = clean_search_results(hits, min_score_threshold=0.2, max_content_length_per_page=10)

    assert [p["url"] for p in cleaned] == ["https://b", "https://a"]  # best first, dup and low gone
    assert cleaned[0] == {
        "type": "page",
        "title": "b",
        "url": "https://b",
        "content": "a   z",  # the inline image blanked
        "score": 0.8,
    }
    assert cleaned[1]["content"] == "x" * 10 + "..."


def test_a_reader_page_becomes_deerflows_titled_markdown() -> None:
    jina = "Title: Hello\n\nURL Source: https://x\n\nMarkdown Content:\n# Hello\nbody\n"

    assert crawl_markdown(jina) == "# Hello\n\n# Hello\nbody\n"
    assert crawl_markdown("") == "# \n\n*No content available*\n"
    assert crawl_markdown("plain text") == "# \n\nplain text"


# ------------------------------------------------------------------ on the cluster


def _search_tool(cluster: DropinCluster) -> BaseTool:
    return get_web_search_tool(3, search_depth="basic", cluster=cluster.conn)


def _check_search(message: ToolMessage, query: str) -> None:
    results = json.loads(str(message.content))
    assert isinstance(results, list) and 1 <= len(results) <= 3
    assert all(set(r) == PAGE_KEYS and r["type"] == "page" for r in results)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert message.artifact["query"] == query
    assert len(message.artifact["results"]) == len(results)


def _call(name: str, args: dict[str, Any], call_id: str = "call-1") -> dict[str, Any]:
    return {"type": "tool_call", "name": name, "args": args, "id": call_id}


def test_web_search_returns_deerflows_result_list_and_draws_on_its_rate_key(
    dropin_cluster: DropinCluster,
) -> None:
    before = dropin_cluster.rate_key_admitted("search/acct-search")
    message = _search_tool(dropin_cluster).invoke(_call("web_search", {"query": "EV batteries"}))

    assert isinstance(message, ToolMessage)
    _check_search(message, "EV batteries")
    assert dropin_cluster.rate_key_admitted("search/acct-search") == before + 1


async def test_web_search_answers_the_same_through_ainvoke(dropin_cluster: DropinCluster) -> None:
    message = await _search_tool(dropin_cluster).ainvoke(
        _call("web_search", {"query": "delivery market share"})
    )

    assert isinstance(message, ToolMessage)
    _check_search(message, "delivery market share")


def test_a_failed_search_is_deerflows_error_json(dropin_cluster: DropinCluster) -> None:
    content = _search_tool(dropin_cluster).invoke({"query": "   "})

    error = json.loads(content)["error"]
    assert error.startswith("TaskFailedError(") and "must not be empty" in error


async def test_crawl_tool_returns_the_pages_markdown_cut_to_1000_characters(
    dropin_cluster: DropinCluster,
) -> None:
    crawler = ClusterCrawlTool(cluster=dropin_cluster.conn)
    url = "https://example.org/long/page"
    sync_answer = json.loads(crawler.invoke({"url": url}))
    async_answer = json.loads(await crawler.ainvoke({"url": url}))

    assert set(sync_answer) == {"url", "crawled_content"} and sync_answer["url"] == url
    content = sync_answer["crawled_content"]
    assert content.startswith("# ") and "\n\n" in content and "Markdown Content:" not in content
    assert 0 < len(content) <= 1000
    assert async_answer == sync_answer  # same page, same shape (and the cluster cache hit)


def test_crawl_tool_answers_a_pdf_url_without_crawling_and_fails_as_deerflow_does(
    dropin_cluster: DropinCluster,
) -> None:
    crawler = ClusterCrawlTool(cluster=dropin_cluster.conn)

    pdf = json.loads(crawler.invoke({"url": "https://example.org/paper.PDF"}))
    failed = crawler.invoke({"url": "ftp://example.org/file"})

    assert pdf["is_pdf"] is True and pdf["crawled_content"] is None and "PDF" in pdf["error"]
    assert failed.startswith("Failed to crawl. Error: TaskFailedError(")
    assert "http(s) URL" in failed


def test_a_tool_without_a_controller_says_which_variable_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CONTROLLER_ENV, raising=False)

    answer = ClusterCrawlTool().invoke({"url": "https://example.org/"})

    assert answer.startswith("Failed to crawl. Error: ControllerNotConfiguredError(")
    assert CONTROLLER_ENV in answer


def test_python_repl_tool_is_off_unless_deerflow_enables_it(
    dropin_cluster: DropinCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENABLE_PYTHON_REPL", raising=False)

    answer = ClusterPythonReplTool(cluster=dropin_cluster.conn).invoke({"code": "print(1)"})

    assert answer == (
        "Tool disabled: Python REPL tool is disabled. Please enable it in environment "
        "configuration."
    )


async def test_python_repl_tool_runs_code_on_the_agent_and_reports_as_deerflow(
    dropin_cluster: DropinCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENABLE_PYTHON_REPL", "true")
    repl = ClusterPythonReplTool(cluster=dropin_cluster.conn)

    ok = repl.invoke({"code": "print(6 * 7)"})
    failed = await repl.ainvoke({"code": "1 / 0"})

    assert ok == "Successfully executed:\n```python\nprint(6 * 7)\n```\nStdout: 42\n"
    assert failed == (
        "Error executing code:\n```python\n1 / 0\n```\nError: ZeroDivisionError('division by zero')"
    )


async def test_a_cancelled_call_cancels_its_task_on_the_cluster(
    dropin_cluster: DropinCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENABLE_PYTHON_REPL", "true")
    fifo = tmp_path / "snippet"
    os.mkfifo(fifo)
    # The snippet says it runs through the FIFO, then holds it open until it is killed.
    code = f"f = open({str(fifo)!r}, 'w'); f.write('up\\n'); f.flush()\nimport time; time.sleep(60)"
    repl = ClusterPythonReplTool(cluster=dropin_cluster.conn)

    def wait_running() -> IO[str]:
        reader = open(fifo)  # noqa: SIM115 - closed below; blocks until the snippet opens it
        assert reader.readline() == "up\n"
        return reader

    call = asyncio.create_task(repl.ainvoke({"code": code}))
    reader = await asyncio.wait_for(asyncio.to_thread(wait_running), 20)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    started = time.monotonic()
    # EOF: every writer is gone, i.e. the agent killed the snippet when its job was cancelled.
    assert await asyncio.wait_for(asyncio.to_thread(reader.read), 30) == ""
    reader.close()
    assert time.monotonic() - started < 20
