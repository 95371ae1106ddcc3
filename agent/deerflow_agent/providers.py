"""DeerFlow's provider handlers: ``llm`` (OpenAI-compatible chat), ``search`` (Tavily-like) and
``crawl`` (Jina-reader-like). Installed through the ``deerflow.handlers`` entry points.

Each attempt makes exactly one HTTP request through the agent's shared session and never
retries: the controller owns retries, backoff and the cluster-wide rate limit, and learns from
the signals every outcome carries in its metadata (keys from :mod:`deerflow_common.signals`),
failures included. Error classes are in :mod:`deerflow_agent._provider`.

Configuration, per request: the payload's ``base_url`` and ``api_key``, else the environment
(``DEERFLOW_{LLM,SEARCH,CRAWL}_{BASE_URL,API_KEY}``), else the public URL below. A missing key
is a FatalError naming the variable. The per-request timeout is the attempt's time left, capped
by each provider's default.

Payloads and outputs are UTF-8 JSON.
"""

from __future__ import annotations

import json
from typing import Any

from deerflow_common import signals

from ._handler import FatalError, Handler, HandlerKind, HandlerResult, TaskContext
from ._payload import integer, parse_object, string
from ._provider import Provider

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
    body: dict[str, Any] = {"model": string("llm", doc, "model"), "messages": _messages(doc)}
    if doc.get("max_tokens") is not None:
        max_tokens = integer("llm", doc, "max_tokens")
        if max_tokens < 1:
            raise FatalError(f"llm: payload field 'max_tokens' must be >= 1, got {max_tokens}")
        body["max_tokens"] = max_tokens
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
    return HandlerResult(json.dumps(output).encode(), reply.metadata)


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
    description='One chat completion {"model", "messages"|"prompt", "max_tokens"?}; no retries.',
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
)


# ------------------------------------------------------------------------- crawl


async def _crawl(ctx: TaskContext, payload: bytes) -> HandlerResult:
    doc = parse_object("crawl", payload)
    url = string("crawl", doc, "url").strip()
    if not url.startswith(("http://", "https://")):
        raise FatalError(f"crawl: payload field 'url' must be an http(s) URL, got {url!r}")
    endpoint = CRAWL.endpoint("crawl", doc)
    reply = await CRAWL.request(
        ctx,
        "GET",
        endpoint.url(f"/r/{url}"),
        api_key=endpoint.api_key,
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
        max_bytes=CRAWL_MAX_BYTES,
    )
    # An empty page is an answer, not a failure: DeerFlow treats it as a soft miss and moves on,
    # and a retry would only fetch the same emptiness again.
    output = {"url": url, "content": reply.text(), "truncated": reply.truncated}
    return HandlerResult(json.dumps(output).encode(), reply.metadata)


crawl = Handler(
    "crawl",
    _crawl,
    HandlerKind.IO,
    description='Read one page as text {"url"}; empty pages succeed empty; no retries.',
)
