"""DeerFlow 1.x's tools (``src/tools``) with the same names, argument schemas and output shapes,
each call run as a task on the cluster: ``web_search`` -> ``search``, ``crawl_tool`` ->
``crawl``, ``python_repl_tool`` -> ``python`` (the opt-in handler of :mod:`.handlers`). The
cluster-wide rate limiter, retries, the result cache and tracing apply to every call.

Swap the import in DeerFlow::

    # from src.tools import crawl_tool, get_web_search_tool, python_repl_tool
    from deerflow_dropins.tools import crawl_tool, get_web_search_tool, python_repl_tool

Like DeerFlow's, the tools return error strings instead of raising (the LLM reads them): a
search error is ``{"error": "<repr>"}`` as JSON, a crawl error ``Failed to crawl. Error:
<repr>``, a Python error ``Error executing code: ...``. ``invoke`` and ``ainvoke`` both work;
``ainvoke`` never blocks the caller's event loop. The controller's address is
``$DEERFLOW_CONTROLLER`` unless a tool is given ``cluster=connect(...)`` (see ``_cluster``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel, ConfigDict, Field

from deerflow_controller.client import Task, TaskResult

from ._cluster import ClusterConnection, connect
from ._trace import call_trace, traced_call

__all__ = [
    "CRAWL_KEEP_CHARS",
    "ClusterCrawlTool",
    "ClusterPythonReplTool",
    "ClusterWebSearch",
    "TavilyInput",
    "clean_search_results",
    "crawl_markdown",
    "crawl_tool",
    "get_web_search_tool",
    "python_repl_tool",
]

logger = logging.getLogger(__name__)

CRAWL_KEEP_CHARS = 1000
"""DeerFlow 1.x keeps a page's first 1,000 characters of markdown (``compress_crawl_content``)."""
PYTHON_REPL_ENV = "ENABLE_PYTHON_REPL"
"""DeerFlow's own switch for ``python_repl_tool``; off unless true/1/yes/on, as in DeerFlow."""


# ------------------------------------------------------------------------- schemas

# The argument schemas are DeerFlow's: the search tool's is langchain-community's TavilyInput
# (DeerFlow's TavilySearchWithImages inherits it); the other two are made by ``@tool`` from
# these signatures and docstrings, as DeerFlow makes them, so their JSON schemas (names,
# descriptions, titles) are identical to what an LLM sees from DeerFlow.


class TavilyInput(BaseModel):
    """Input for the Tavily tool."""

    query: str = Field(description="search query to look up")


def _crawl_signature(
    url: Annotated[str, "The url to crawl."],
) -> str:
    """Use this to crawl a url and get a readable content in markdown format."""
    raise NotImplementedError  # a signature only: the schema's source


def _python_signature(
    code: Annotated[str, "The python code to execute to do further analysis or calculation."],
) -> str:
    """Use this to execute python code and do data analysis or calculation. If you want to see the output of a value,
    you should print it out with `print(...)`. This is visible to the user."""  # noqa: E501 - DeerFlow's text
    raise NotImplementedError  # a signature only: the schema's source


def _schema_of(fn: Callable[..., str], name: str) -> tuple[type[BaseModel], str]:
    fn.__name__ = name
    made = tool(fn)
    schema = made.args_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    return schema, made.description


_CRAWL_SCHEMA, _CRAWL_DESCRIPTION = _schema_of(_crawl_signature, "crawl_tool")
_PYTHON_SCHEMA, _PYTHON_DESCRIPTION = _schema_of(_python_signature, "python_repl_tool")


# ------------------------------------------------------------------------- the shared call


class _ClusterTool(BaseTool):
    """What the three tools share: the connection, the task's timeout, running one task."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    cluster: ClusterConnection | None = Field(default=None, exclude=True)
    """The connection to use; None = the shared one for ``$DEERFLOW_CONTROLLER``."""
    timeout_s: float = 60.0
    """Start-to-close timeout of one attempt of the task (the handler's HTTP call included)."""
    priority: int = 0
    """The task's priority on the cluster (higher first)."""
    deadline_s: float = 300.0
    """The longest one call may take on the cluster, waits for rate limits and retries included
    (the task's schedule-to-close): past it the call returns its error string instead of
    waiting on. 0 = no limit."""

    def _connection(self) -> ClusterConnection:
        return self.cluster if self.cluster is not None else connect()

    def _call(self, task: Task, run_manager: CallbackManagerForToolRun | None) -> TaskResult:
        conn = self._connection()
        with traced_call(self.name, call_trace(run_manager), conn.tracer_provider):
            return conn.run_task(task, name=f"deerflow {self.name}")

    async def _acall(
        self, task: Task, run_manager: AsyncCallbackManagerForToolRun | None
    ) -> TaskResult:
        conn = self._connection()
        with traced_call(self.name, call_trace(run_manager), conn.tracer_provider):
            return await conn.arun_task(task, name=f"deerflow {self.name}")


# ------------------------------------------------------------------------- web_search

_BASE64_IMAGE = re.compile(r"data:image/[^;]+;base64,[a-zA-Z0-9+/=]+")


def _score(hit: dict[str, Any]) -> float:
    score = hit.get("score")
    return float(score) if isinstance(score, int | float) and not isinstance(score, bool) else 0.0


def clean_search_results(
    hits: list[dict[str, Any]],
    *,
    min_score_threshold: float | None = None,
    max_content_length_per_page: int | None = None,
) -> list[dict[str, Any]]:
    """The ``search`` handler's hits as DeerFlow's Tavily tool returns them: each a
    ``{"type": "page", "title", "url", "content", "score"}``, then DeerFlow's post-processing
    (``SEARCH_ENGINE`` settings in its conf.yaml): repeated URLs dropped (first kept), pages
    under ``min_score_threshold`` dropped (when > 0), inline base64 images blanked, content
    longer than ``max_content_length_per_page`` cut to it plus "..." (when > 0), best score
    first."""
    seen: set[str] = set()
    pages: list[dict[str, Any]] = []
    for hit in hits:
        url = str(hit.get("url") or "")
        if url:
            if url in seen:
                continue
            seen.add(url)
        score = hit.get("score")
        page: dict[str, Any] = {
            "type": "page",
            "title": str(hit.get("title") or ""),
            "url": url,
            "content": _BASE64_IMAGE.sub(" ", str(hit.get("content") or "")),
            "score": score,
        }
        if min_score_threshold and min_score_threshold > 0 and _score(page) < min_score_threshold:
            continue
        limit = max_content_length_per_page
        if limit and limit > 0 and len(page["content"]) > limit:
            page["content"] = page["content"][:limit] + "..."
        pages.append(page)
    pages.sort(key=_score, reverse=True)  # stable: equal scores keep the provider's order
    return pages


class ClusterWebSearch(_ClusterTool):
    """DeerFlow 1.x's ``web_search`` (its Tavily tool) as a ``search`` task on the cluster.

    Returns ``(content, artifact)`` (``response_format="content_and_artifact"``, as DeerFlow's):
    the content is the JSON list of cleaned results (:func:`clean_search_results`), the artifact
    the handler's raw answer ``{"query", "results"}``; on error the content is
    ``{"error": "<repr>"}`` and the artifact ``{}``. Image results are not produced: the
    cluster's ``search`` handler returns pages only."""

    name: str = "web_search"
    description: str = (
        "A search engine optimized for comprehensive, accurate, and trusted results. "
        "Useful for when you need to answer questions about current events. "
        "Input should be a search query."
    )
    args_schema: type[BaseModel] = TavilyInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    max_results: int = 5
    """Results asked of the provider (DeerFlow's ``max_search_results``; 1-20)."""
    search_depth: Literal["basic", "advanced"] = "advanced"
    min_score_threshold: float | None = None
    max_content_length_per_page: int | None = None

    def _task(self, query: str) -> Task:
        conn = self._connection()
        return Task(
            "search",
            "search",
            {"query": query, "max_results": self.max_results, "search_depth": self.search_depth},
            priority=self.priority,
            rate_keys=(conn.settings.search_key,),
            tenant=conn.settings.tenant,
            timeout_s=self.timeout_s,
            schedule_to_close_s=self.deadline_s,
        )

    def _shape(self, result: TaskResult) -> tuple[str, dict[str, Any]]:
        raw = result.json()
        hits = raw.get("results") if isinstance(raw, dict) else None
        if not isinstance(hits, list):
            raise ValueError("the search handler answered without a 'results' list")
        cleaned = clean_search_results(
            [h for h in hits if isinstance(h, dict)],
            min_score_threshold=self.min_score_threshold,
            max_content_length_per_page=self.max_content_length_per_page,
        )
        return json.dumps(cleaned, ensure_ascii=False), raw

    def _run(
        self, query: str, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[str, dict[str, Any]]:
        try:
            return self._shape(self._call(self._task(query), run_manager))
        except Exception as e:
            return _search_error(e)

    async def _arun(
        self, query: str, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> tuple[str, dict[str, Any]]:
        try:
            return self._shape(await self._acall(self._task(query), run_manager))
        except Exception as e:
            return _search_error(e)


def _search_error(e: Exception) -> tuple[str, dict[str, Any]]:
    logger.error("web_search failed: %s", e)
    return json.dumps({"error": repr(e)}, ensure_ascii=False), {}


def get_web_search_tool(
    max_search_results: int,
    *,
    search_depth: Literal["basic", "advanced"] = "advanced",
    min_score_threshold: float | None = None,
    max_content_length_per_page: int | None = None,
    cluster: ClusterConnection | None = None,
    timeout_s: float = 60.0,
) -> ClusterWebSearch:
    """DeerFlow 1.x's ``get_web_search_tool(max_search_results)``: the ``web_search`` tool, on
    the cluster whatever ``SEARCH_ENGINE`` says (the agents' ``DEERFLOW_SEARCH_*`` settings
    choose the provider). The keyword arguments are DeerFlow's ``SEARCH_ENGINE`` options that
    the cluster's search honours."""
    return ClusterWebSearch(
        max_results=max_search_results,
        search_depth=search_depth,
        min_score_threshold=min_score_threshold,
        max_content_length_per_page=max_content_length_per_page,
        cluster=cluster,
        timeout_s=timeout_s,
    )


# ------------------------------------------------------------------------- crawl_tool

_JINA_HEADER = re.compile(
    r"\ATitle:[ \t]*(?P<title>[^\n]*)\n(?:.*?\n)??Markdown Content:\n", re.DOTALL
)


def crawl_markdown(text: str) -> str:
    """A reader's page as DeerFlow's ``Article.to_markdown()``: ``# <title>`` and a blank line,
    then the page's markdown (``*No content available*`` when empty). Jina reader's text layout
    (``Title:`` / ``URL Source:`` / ``Markdown Content:``) gives the title; other text is taken
    as the markdown, untitled."""
    match = _JINA_HEADER.match(text)
    title, body = (match["title"].strip(), text[match.end() :]) if match else ("", text)
    return f"# {title}\n\n" + (body if body.strip() else "*No content available*\n")


def _is_pdf_url(url: str) -> bool:
    return urlparse(url).path.lower().endswith(".pdf")


class ClusterCrawlTool(_ClusterTool):
    """DeerFlow 1.x's ``crawl_tool`` as a ``crawl`` task on the cluster.

    Returns ``{"url", "crawled_content"}`` as JSON, the content being the page's markdown cut to
    its first 1,000 characters (:data:`CRAWL_KEEP_CHARS`, as DeerFlow cuts it); a PDF URL is not
    crawled (``{"url", "error", "crawled_content": null, "is_pdf": true}``, DeerFlow's answer);
    an error is ``Failed to crawl. Error: <repr>``."""

    name: str = "crawl_tool"
    description: str = _CRAWL_DESCRIPTION
    args_schema: type[BaseModel] = _CRAWL_SCHEMA
    keep_chars: int = CRAWL_KEEP_CHARS

    def _task(self, url: str) -> Task:
        conn = self._connection()
        return Task(
            "crawl",
            "crawl",
            {"url": url},
            priority=self.priority,
            rate_keys=(conn.settings.crawl_key,),
            tenant=conn.settings.tenant,
            timeout_s=self.timeout_s,
            schedule_to_close_s=self.deadline_s,
        )

    def _shape(self, url: str, result: TaskResult) -> str:
        page = result.json()
        text = page.get("content") if isinstance(page, dict) else None
        if not isinstance(text, str):
            raise ValueError("the crawl handler answered without a 'content' string")
        content = crawl_markdown(text)[: self.keep_chars]
        return json.dumps({"url": url, "crawled_content": content}, ensure_ascii=False)

    def _run(self, url: str, run_manager: CallbackManagerForToolRun | None = None) -> str:
        if _is_pdf_url(url):
            return _pdf_answer(url)
        try:
            return self._shape(url, self._call(self._task(url), run_manager))
        except Exception as e:
            return _crawl_error(e)

    async def _arun(
        self, url: str, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> str:
        if _is_pdf_url(url):
            return _pdf_answer(url)
        try:
            return self._shape(url, await self._acall(self._task(url), run_manager))
        except Exception as e:
            return _crawl_error(e)


def _pdf_answer(url: str) -> str:
    return json.dumps(
        {
            "url": url,
            "error": "PDF files cannot be crawled directly. Please download and view the PDF "
            "manually.",
            "crawled_content": None,
            "is_pdf": True,
        },
        ensure_ascii=False,
    )


def _crawl_error(e: Exception) -> str:
    message = f"Failed to crawl. Error: {e!r}"
    logger.error(message)
    return message


# ------------------------------------------------------------------------- python_repl_tool


def _python_repl_enabled() -> bool:
    return os.environ.get(PYTHON_REPL_ENV, "false").lower() in ("true", "1", "yes", "on")


class ClusterPythonReplTool(_ClusterTool):
    """DeerFlow 1.x's ``python_repl_tool`` as a ``python`` task, run by the opt-in handler on
    the agents an operator enabled it on (see :mod:`deerflow_dropins.handlers`).

    Off unless ``$ENABLE_PYTHON_REPL`` is true in the DeerFlow process, as in DeerFlow. Returns
    ``Successfully executed:`` + the code + ``Stdout: <output>``, or ``Error executing code:``
    + the code + ``Error: <error>`` when the code raised, timed out or hit a limit (or its
    output mentions an Error or Exception: DeerFlow's own test)."""

    name: str = "python_repl_tool"
    description: str = _PYTHON_DESCRIPTION
    args_schema: type[BaseModel] = _PYTHON_SCHEMA

    def _task(self, code: str) -> Task:
        conn = self._connection()
        return Task(
            "python",
            "python",
            {"code": code},
            priority=self.priority,
            tenant=conn.settings.tenant,
            timeout_s=self.timeout_s,
            schedule_to_close_s=self.deadline_s,
            cache="off",  # code may read the clock, draw random numbers, fetch URLs
        )

    def _run(self, code: str, run_manager: CallbackManagerForToolRun | None = None) -> str:
        refused = _python_refusal(code)
        if refused is not None:
            return refused
        try:
            return _python_answer(code, self._call(self._task(code), run_manager))
        except Exception as e:
            return _python_error(code, repr(e))

    async def _arun(
        self, code: str, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> str:
        refused = _python_refusal(code)
        if refused is not None:
            return refused
        try:
            return _python_answer(code, await self._acall(self._task(code), run_manager))
        except Exception as e:
            return _python_error(code, repr(e))


def _python_refusal(code: object) -> str | None:
    if not _python_repl_enabled():
        message = "Python REPL tool is disabled. Please enable it in environment configuration."
        logger.warning(message)
        return f"Tool disabled: {message}"
    if not isinstance(code, str):
        return _python_error(code, f"Invalid input: code must be a string, got {type(code)}")
    return None


def _python_error(code: object, error: str) -> str:
    logger.error(error)
    return f"Error executing code:\n```python\n{code}\n```\nError: {error}"


def _python_answer(code: str, result: TaskResult) -> str:
    doc = result.json()  # raises TaskFailedError when the task failed: the caller reports it
    error = doc.get("error") if isinstance(doc, dict) else "the python handler's answer is not JSON"
    if error:
        return _python_error(code, str(error))
    stdout = str(doc.get("stdout", ""))
    if doc.get("truncated"):
        stdout += "\n[output truncated]"
    if "Error" in stdout or "Exception" in stdout:  # DeerFlow's own test of a REPL result
        return _python_error(code, stdout)
    return f"Successfully executed:\n```python\n{code}\n```\nStdout: {stdout}"


# ------------------------------------------------------------------------- instances

crawl_tool = ClusterCrawlTool()
"""DeerFlow's ``src.tools.crawl_tool``, on the cluster."""
python_repl_tool = ClusterPythonReplTool()
"""DeerFlow's ``src.tools.python_repl_tool``, on the cluster (opt-in handler on the agents)."""
