"""DeerFlow's provider handlers: ``llm`` (OpenAI-compatible chat), ``search`` (Tavily-like) and
``crawl`` (Jina-reader-like). Installed through the ``deerflow.handlers`` entry points.

Each attempt makes exactly one HTTP request through the agent's shared session and never
retries: the controller owns retries, backoff and the cluster-wide rate limit, and learns from
the signals every outcome carries in its metadata (keys from :mod:`deerflow_common.signals`),
failures included. Error classes are in :mod:`deerflow_agent._provider`.

Configuration, per request: the payload's ``base_url`` and ``api_key``, else the environment
(``DEERFLOW_{LLM,SEARCH,CRAWL}_{BASE_URL,API_KEY}``), else the public URL below. A missing key
is a FatalError naming the variable. A payload ``base_url`` other than the operator's needs the
payload's own ``api_key`` (the environment's key is never sent to a URL a task names) and is
reached only where the agent's ``--http-allow`` policy allows. The per-request timeout is the
attempt's time left, capped by each provider's default.

Payloads and outputs are UTF-8 JSON. An ``llm`` task that asks for its dependencies' outputs
(``Task(inputs=...)``) gets them as one more user message after its own, each under its task id
(an ``llm`` output as its answer's text; each cut at ``LLM_INPUT_CHARS``), and its output names
them in ``context_from``: how a reporter reads its research steps' findings.

Traits (see :class:`Handler`): all three are cacheable; ``llm`` is declared nondeterministic (a
sampled answer is cached only for tasks that ask); ``search`` offers its ``query`` to the
similarity cache; ``crawl`` takes a list of URLs (``items_field="urls"``) that the controller may
split. Default durations are docs/WORKLOAD.md's medians.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any

from deerflow_common import signals
from deerflow_common.errors import ErrorClass

from ._context import TaskContext
from ._errors import FatalError, HandlerError
from ._handler import Handler, HandlerKind, HandlerResult
from ._payload import integer, parse_object, string
from ._provider import Endpoint, Provider
from .builtins import merge_results

__all__ = ["CRAWL", "LLM", "SEARCH", "crawl", "llm", "search"]

LLM = Provider(
    label="the LLM provider",
    base_url_env="DEERFLOW_LLM_BASE_URL",
    api_key_env="DEERFLOW_LLM_API_KEY",
    default_base_url="https://api.openai.com",
    default_timeout_s=600.0,  # openai-python's default; a generation can take minutes
)
SEARCH = Provider(
    label="the search provider",
    base_url_env="DEERFLOW_SEARCH_BASE_URL",
    api_key_env="DEERFLOW_SEARCH_API_KEY",
    default_base_url="https://api.tavily.com",
    default_timeout_s=60.0,  # tavily-python's default
)
CRAWL = Provider(
    label="the crawl provider",
    base_url_env="DEERFLOW_CRAWL_BASE_URL",
    api_key_env="DEERFLOW_CRAWL_API_KEY",
    # Jina's reader serves a page at {base}/{url}; this handler asks {base}/r/{url}, the
    # simulator's layout, so point DEERFLOW_CRAWL_BASE_URL at a proxy that maps /r/ for the
    # real service.
    default_base_url="https://r.jina.ai",
    default_timeout_s=30.0,  # a fifth of pages take over 10 s; past 30 s few ever finish
)

SEARCH_DEPTHS = ("basic", "advanced")
CRAWL_MAX_BYTES = 1 << 20
"""Most of a page a crawl returns; DeerFlow keeps about 1 KB of it, so more only costs memory."""


# ------------------------------------------------------------------------- llm


async def _llm(ctx: TaskContext, payload: bytes) -> HandlerResult:
    doc = parse_object("llm", payload)
    messages = _messages(doc)
    if ctx.inputs:
        # The task asked for its dependencies' outputs (issue #15): they are the context the
        # call answers from (a reporter reads its research steps' findings).
        messages = [*messages, _inputs_message(ctx.inputs)]
    body: dict[str, Any] = {"model": string("llm", doc, "model"), "messages": messages}
    if doc.get("max_tokens") is not None:
        max_tokens = integer("llm", doc, "max_tokens")
        if max_tokens < 1:
            raise FatalError(f"llm: payload field 'max_tokens' must be >= 1, got {max_tokens}")
        body["max_tokens"] = max_tokens
    body.update(_passed_options(doc))
    endpoint = LLM.endpoint("llm", doc)
    # OpenAI-style base URLs often end in /v1 already (OPENAI_BASE_URL does): accept both.
    versioned = endpoint.base_url.rstrip("/").endswith("/v1")
    reply = await LLM.request(
        ctx,
        "POST",
        endpoint.url("/chat/completions" if versioned else "/v1/chat/completions"),
        api_key=endpoint.api_key,
        json_body=body,
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
        guarded=endpoint.guarded,
    )
    answer = reply.json(LLM)
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise FatalError(
            f"{LLM.label} answered {reply.where} with something that is not a chat completion "
            f"(no choices); check that {LLM.base_url_env} points at an OpenAI-compatible API",
            metadata=reply.metadata,
        )
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage = _usage(answer.get("usage"))
    for name, count in usage.items():
        reply.metadata[_USAGE_KEYS[name]] = str(count)
    output = {
        "content": content if isinstance(content, str) else "",
        "model": answer.get("model") or body["model"],
        "usage": usage,
        "finish_reason": choices[0].get("finish_reason"),
    }
    tool_calls = message.get("tool_calls") if isinstance(message, dict) else None
    if isinstance(tool_calls, list) and tool_calls:
        output["tool_calls"] = tool_calls  # OpenAI's shape: [{"id", "type", "function"}]
    if ctx.inputs:
        output["context_from"] = list(ctx.inputs)
    return HandlerResult(json.dumps(output).encode(), reply.metadata)


LLM_INPUT_CHARS = 8000
"""Most characters of one dependency's output that an ``llm`` call adds to its context (a
crawled page or a long answer is cut, saying so)."""


def _inputs_message(inputs: Mapping[str, bytes]) -> dict[str, str]:
    """The dependencies' outputs as one user message, each under its task id, in
    ``depends_on`` order: an ``llm`` output as its answer's text, anything else as its text."""
    parts = ["Results of the tasks this one depends on:"]
    for task_id, raw in inputs.items():
        text = raw.decode("utf-8", errors="replace")
        with contextlib.suppress(ValueError):
            doc = json.loads(text)
            if isinstance(doc, dict) and isinstance(doc.get("content"), str):
                text = doc["content"]
        if len(text) > LLM_INPUT_CHARS:
            cut = len(text) - LLM_INPUT_CHARS
            text = f"{text[:LLM_INPUT_CHARS]}\n[... {cut} more characters cut]"
        parts.append(f"### {task_id}\n{text}")
    return {"role": "user", "content": "\n\n".join(parts)}


LLM_MAX_TOOLS = 128
"""Most tools one call may offer (OpenAI's own limit)."""


def _passed_options(doc: dict[str, Any]) -> dict[str, Any]:
    """The optional chat-completion fields the handler passes on as given, checked: ``tools``
    and ``tool_choice`` (function calling), ``temperature``, ``top_p``, ``stop``."""
    options: dict[str, Any] = {}
    tools = doc.get("tools")
    if tools is not None:
        if (
            not isinstance(tools, list)
            or not 1 <= len(tools) <= LLM_MAX_TOOLS
            or not all(isinstance(t, dict) for t in tools)
        ):
            raise FatalError(
                f"llm: payload field 'tools' must be a list of 1-{LLM_MAX_TOOLS} tool objects"
            )
        options["tools"] = tools
    choice = doc.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, str | dict):
            raise FatalError("llm: payload field 'tool_choice' must be a string or an object")
        options["tool_choice"] = choice
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = doc.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise FatalError(f"llm: payload field {name!r} must be {low:g}-{high:g}, got {value!r}")
        options[name] = value
    stop = doc.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > 4
            or not all(isinstance(x, str) for x in stops)
        ):
            raise FatalError("llm: payload field 'stop' must be a string or a list of up to 4")
        options["stop"] = stops
    return options


def _messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages: ``messages`` as given, or ``prompt`` as one user message."""
    messages = doc.get("messages")
    if messages is None:
        if doc.get("prompt") is None:
            raise FatalError("llm: the payload needs 'messages' (a list) or 'prompt' (a string)")
        return [{"role": "user", "content": string("llm", doc, "prompt")}]
    if not isinstance(messages, list) or not messages:
        raise FatalError("llm: payload field 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise FatalError(f"llm: messages[{i}] must be an object with a 'role' string")
    return messages


_USAGE_KEYS = {
    "prompt_tokens": signals.PROMPT_TOKENS,
    "completion_tokens": signals.COMPLETION_TOKENS,
    "total_tokens": signals.TOTAL_TOKENS,
}


def _usage(usage: object) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {
        name: value
        for name in _USAGE_KEYS
        if isinstance(value := usage.get(name), int) and not isinstance(value, bool)
    }


llm = Handler(
    "llm",
    _llm,
    HandlerKind.IO,
    description='One chat completion {"model", "messages"|"prompt", "max_tokens"?, "tools"?, '
    '"tool_choice"?, "temperature"?, "top_p"?, "stop"?}; no retries.',
    cacheable=True,
    nondeterministic=True,  # sampled: the same prompt may get another answer
    default_duration_s=5.0,  # 0.8 s to the first token + a few hundred tokens at 30-80 tok/s
)


# ------------------------------------------------------------------------- search


async def _search(ctx: TaskContext, payload: bytes) -> HandlerResult:
    doc = parse_object("search", payload)
    query = string("search", doc, "query")
    if not query.strip():
        raise FatalError("search: payload field 'query' must not be empty")
    max_results = integer("search", doc, "max_results", 5)
    if not 1 <= max_results <= 20:
        raise FatalError(f"search: payload field 'max_results' must be 1-20, got {max_results}")
    depth = string("search", doc, "search_depth", "basic")
    if depth not in SEARCH_DEPTHS:
        raise FatalError(
            f"search: payload field 'search_depth' must be basic or advanced, not {depth!r}"
        )
    endpoint = SEARCH.endpoint("search", doc)
    reply = await SEARCH.request(
        ctx,
        "POST",
        endpoint.url("/search"),
        api_key=endpoint.api_key,
        json_body={
            "api_key": endpoint.api_key,
            "query": query,
            "max_results": max_results,
            "search_depth": depth,
        },
        guarded=endpoint.guarded,
    )
    answer = reply.json(SEARCH)
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise FatalError(
            f"{SEARCH.label} answered {reply.where} without a 'results' list; check that "
            f"{SEARCH.base_url_env} points at a Tavily-compatible API",
            metadata=reply.metadata,
        )
    hits = [_hit(r) for r in results if isinstance(r, dict)]
    output = {"query": query, "results": hits}
    return HandlerResult(json.dumps(output).encode(), reply.metadata)


def _hit(result: dict[str, Any]) -> dict[str, Any]:
    """The fields DeerFlow reads from one search result."""
    score = result.get("score")
    return {
        "title": str(result.get("title") or ""),
        "url": str(result.get("url") or ""),
        "content": str(result.get("content") or ""),
        "score": score if isinstance(score, int | float) and not isinstance(score, bool) else None,
    }


search = Handler(
    "search",
    _search,
    HandlerKind.IO,
    description='One web search {"query", "max_results"?, "search_depth"?}; no retries.',
    cacheable=True,
    similarity_field="query",
    default_duration_s=1.2,  # basic depth's median
)


# ------------------------------------------------------------------------- crawl


CRAWL_DEFAULT_CONCURRENCY = 4
CRAWL_MAX_CONCURRENCY = 16
"""Pages of one list crawl read at once: bounded, so a long list does not burst past the
reader's rate limit (Jina's free keys allow 2 at once) from inside a single attempt."""
CRAWL_MAX_URLS = 100


async def _crawl(ctx: TaskContext, payload: bytes) -> HandlerResult:
    doc = parse_object("crawl", payload)
    if "urls" in doc:
        return await _crawl_list(ctx, doc)
    url = _page_url(string("crawl", doc, "url"), "url")
    endpoint = CRAWL.endpoint("crawl", doc)
    page, metadata = await _read_page(ctx, endpoint, url)
    return HandlerResult(json.dumps(page).encode(), metadata)


def _page_url(raw: str, where: str) -> str:
    url = raw.strip()
    if not url.startswith(("http://", "https://")):
        raise FatalError(f"crawl: payload field {where!r} must be an http(s) URL, got {url!r}")
    return url


async def _read_page(
    ctx: TaskContext, endpoint: Endpoint, url: str
) -> tuple[dict[str, Any], dict[str, str]]:
    reply = await CRAWL.request(
        ctx,
        "GET",
        endpoint.url(f"/r/{url}"),
        api_key=endpoint.api_key,
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
        max_bytes=CRAWL_MAX_BYTES,
        guarded=endpoint.guarded,
    )
    # An empty page is an answer, not a failure: DeerFlow treats it as a soft miss and moves on,
    # and a retry would only fetch the same emptiness again.
    return {"url": url, "content": reply.text(), "truncated": reply.truncated}, reply.metadata


async def _crawl_list(ctx: TaskContext, doc: dict[str, Any]) -> HandlerResult:
    """``{"urls": [...], "concurrency"?}``: read every page, at most ``concurrency`` at once, and
    return ``{"results": [one per URL, in order]}`` where a page that failed is
    ``{"url", "error", "error_class", "retryable"}``. Succeeds while any page was read; when
    every page failed the first failure is raised, so the controller retries (or gives up on)
    the whole list as it would one page. The metadata are those of a 429 if any page met one
    (so the limiter backs off), else of the last page read: one attempt, one set of signals."""
    urls = doc["urls"]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise FatalError("crawl: payload field 'urls' must be a non-empty list of URL strings")
    if len(urls) > CRAWL_MAX_URLS:
        raise FatalError(
            f"crawl: payload field 'urls' lists {len(urls)} URLs, more than {CRAWL_MAX_URLS}; "
            "split the list over several tasks"
        )
    concurrency = integer("crawl", doc, "concurrency", CRAWL_DEFAULT_CONCURRENCY)
    if not 1 <= concurrency <= CRAWL_MAX_CONCURRENCY:
        raise FatalError(
            f"crawl: payload field 'concurrency' must be 1-{CRAWL_MAX_CONCURRENCY}, got "
            f"{concurrency}"
        )
    endpoint = CRAWL.endpoint("crawl", doc)
    gate = asyncio.Semaphore(concurrency)
    done = 0
    last_metadata: dict[str, str] = {}
    throttled: dict[str, str] | None = None

    async def one(index: int, raw: str) -> dict[str, Any] | HandlerError | FatalError:
        nonlocal done, last_metadata, throttled
        try:
            url = _page_url(raw, f"urls[{index}]")
            async with gate:
                page, metadata = await _read_page(ctx, endpoint, url)
            last_metadata = metadata
            return page
        except (HandlerError, FatalError) as exc:
            if exc.error_class is ErrorClass.RATE_LIMITED and throttled is None:
                throttled = exc.metadata
            return exc
        finally:
            done += 1
            ctx.progress(done / len(urls), f"{done}/{len(urls)} pages")

    outcomes = await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
    pages = [o for o in outcomes if isinstance(o, dict)]
    if not pages:
        first = outcomes[0]
        assert isinstance(first, HandlerError | FatalError)
        raise first
    results = [
        o if isinstance(o, dict) else _page_error(url, o)
        for url, o in zip(urls, outcomes, strict=True)
    ]
    metadata = throttled if throttled is not None else last_metadata
    return HandlerResult(json.dumps({"results": results}).encode(), dict(metadata))


def _page_error(url: str, exc: HandlerError | FatalError) -> dict[str, Any]:
    retryable = isinstance(exc, HandlerError) and exc.retryable
    klass = exc.error_class
    if klass is ErrorClass.UNSPECIFIED:
        klass = ErrorClass.TRANSIENT if retryable else ErrorClass.FATAL
    return {"url": url, "error": exc.message, "error_class": klass.name, "retryable": retryable}


crawl = Handler(
    "crawl",
    _crawl,
    HandlerKind.IO,
    description='Read one page {"url"} or several {"urls": [...]} as text; empty pages succeed '
    "empty; no retries.",
    cacheable=True,
    items_field="urls",
    merger=merge_results,
    default_duration_s=5.5,  # per page: Jina's median
)
