"""The three simulated providers over HTTP: OpenAI-compatible chat, Tavily-like search and a
Jina-like reader.

Every request follows one lifecycle: authenticate (401), parse (400), admit against the key's
limits (429, decided at once, before any latency), then either fail at once (a 5xx for a share
of admitted requests; it keeps its RPM cost) or hold its concurrency slot for a log-normal
latency and answer. A client that hangs up cancels the wait and frees the slot.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import content
from .limits import KeyLimiter, Permit, Throttled
from .state import ProviderState
from .stats import Outcome
from .wire import (
    failure_message,
    jina_error,
    openai_error,
    openai_failure,
    openai_throttled,
    ratelimit_headers,
    retry_after_headers,
    tavily_error,
    throttled_message,
)

__all__ = ["CHAT", "READER", "SEARCH", "BadRequest", "ChatRequest", "ProviderEndpoints"]

CHAT, SEARCH, READER = "chat", "search", "reader"
"""Endpoint names in /stats."""

TAVILY_MAX_RESULTS = 20


class BadRequest(Exception):
    """A request the simulator cannot read; its message goes back in the 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    prompt: str
    """The message contents joined, for the deterministic reply."""
    prompt_tokens: int
    """Total characters of the message contents // 4, at least 1."""
    max_tokens: int | None
    tool_call: tuple[str, str] | None = None
    """(function name, JSON arguments) when the reply is a tool call: ``tools`` were offered,
    ``tool_choice`` is not "none" and the last message is not a tool's answer."""


def bearer_key(request: web.Request) -> str | None:
    """The key of ``Authorization: Bearer KEY``, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; raises BadRequest when it is empty or not JSON."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"The request body is not valid JSON ({e}).") from None


def parse_chat(body: Any) -> ChatRequest:
    """Validate an OpenAI chat completion request; raises BadRequest naming the bad field."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string.")
    if body.get("stream"):
        raise BadRequest("'stream' is not supported by the simulator; send stream: false.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array.")
    texts = [_message_text(i, message) for i, message in enumerate(messages)]
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise BadRequest("'max_tokens' must be a positive integer.")
    chars = sum(len(text) for text in texts)
    prompt = "\n".join(texts)
    tool_call = _tool_call(body, messages, prompt)
    return ChatRequest(model, prompt, max(1, chars // 4), max_tokens, tool_call)


def _tool_call(body: dict[str, Any], messages: list[Any], prompt: str) -> tuple[str, str] | None:
    """The simulated model's tool call, or None to answer in text. It calls the function
    ``tool_choice`` names, else the first tool, once per turn (after a tool's answer it replies
    in text, so a ReAct loop ends), with every required string parameter set to the end of the
    prompt."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not tools:
        raise BadRequest("'tools' must be a non-empty array of function tools.")
    functions: list[dict[str, Any]] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest("each of 'tools' must be a function tool with a 'name'.")
        functions.append(function)
    choice = body.get("tool_choice", "auto")
    if choice == "none" or messages[-1].get("role") == "tool":
        return None
    chosen: dict[str, Any] | None = functions[0]
    if isinstance(choice, dict):
        named = choice.get("function")
        name = named.get("name") if isinstance(named, dict) else None
        chosen = next((f for f in functions if f["name"] == name), None)
        if chosen is None:
            raise BadRequest(f"'tool_choice' names {name!r}, which is not among 'tools'.")
    assert chosen is not None
    params = chosen.get("parameters")
    params = params if isinstance(params, dict) else {}
    properties = params.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    text = " ".join(prompt.split()[-8:]) or "sim"
    args = {
        name: text
        for name in params.get("required") or []
        if isinstance(properties.get(name), dict) and properties[name].get("type") == "string"
    }
    return chosen["name"], json.dumps(args)


def _message_text(index: int, message: Any) -> str:
    where = f"messages[{index}]"
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise BadRequest(f"'{where}' must be an object with a string 'role'.")
    value = message.get("content")
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        # Content parts: only the text parts count.
        return "".join(
            part["text"]
            for part in value
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    raise BadRequest(f"'{where}.content' must be a string, an array of parts or null.")


def mask(key: str | None) -> str:
    """A key as error messages show it: enough to recognise, not enough to reuse."""
    if not key:
        return "(none)"
    return f"{key[:3]}***{key[-2:]}" if len(key) > 8 else "***"


class ProviderEndpoints:
    """The request handlers; ``routes()`` lists them for an aiohttp application."""

    def __init__(self, state: ProviderState) -> None:
        self.state = state
        self._ids = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/search", self.search),
            web.get("/r/{url:.*}", self.read),
        ]

    # ------------------------------------------------------------------ chat

    async def chat_completions(self, request: web.Request) -> web.Response:
        """OpenAI's ``POST /v1/chat/completions``; x-ratelimit-* headers on every answer to a
        known key, with the budget as admission left it.

        Tokens: prompt + max_tokens (or the drawn completion when max_tokens is unset) are
        charged at admission and settled to prompt + completion at the end; a failed request is
        refunded its tokens, a cancelled one keeps its charge."""
        state, key = self.state, bearer_key(request)
        limiter = state.limiter(key)
        if limiter is None:
            state.stats.record(key, CHAT, Outcome.UNAUTHORIZED)
            message = (
                f"Incorrect API key provided: {mask(key)}."
                if key
                else "You didn't provide an API key: send 'Authorization: Bearer KEY'."
            )
            return openai_error(
                state.config.unknown_key_status,
                message,
                type_="invalid_request_error",
                code="invalid_api_key",
            )
        try:
            chat = parse_chat(await read_json(request))
        except BadRequest as e:
            state.stats.record(key, CHAT, Outcome.INVALID)
            headers = ratelimit_headers(limiter.snapshot(state.now()))
            return openai_error(
                400, e.message, type_="invalid_request_error", code=None, headers=headers
            )
        completion = state.completion(chat.max_tokens)
        charged = chat.prompt_tokens + (chat.max_tokens or completion.tokens)
        verdict = limiter.admit(state.now(), tokens=charged)
        if isinstance(verdict, Throttled):
            state.stats.record(key, CHAT, Outcome.THROTTLED, limit=verdict.limit)
            headers = ratelimit_headers(limiter.snapshot(state.now()))
            return openai_throttled(verdict, f"key {mask(key)}", headers)
        assert key is not None  # a limiter exists only for a key
        # The budget as admission left it, as OpenAI reports it when the answer starts.
        headers = ratelimit_headers(limiter.snapshot(state.now()))
        total = chat.prompt_tokens + completion.tokens
        failure = await self._work(
            key, CHAT, limiter, verdict, state.chat_latency_s(completion.tokens), tokens=total
        )
        if failure is not None:
            return openai_failure(failure, headers)
        call_id = next(self._ids)
        reply: dict[str, Any] = {
            "role": "assistant",
            "content": content.chat_reply(chat.model, chat.prompt, state.config.seed),
        }
        finish = "length" if completion.truncated else "stop"
        if chat.tool_call is not None:
            name, arguments = chat.tool_call
            reply["content"] = None
            reply["tool_calls"] = [
                {
                    "id": f"call_sim_{call_id}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ]
            finish = "tool_calls"
        body = {
            "id": f"chatcmpl-sim-{call_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": chat.prompt_tokens,
                "completion_tokens": completion.tokens,
                "total_tokens": total,
            },
        }
        return web.json_response(body, headers=headers)

    # ------------------------------------------------------------------ search

    async def search(self, request: web.Request) -> web.Response:
        """Tavily's ``POST /search``; the key is ``api_key`` in the body or a Bearer header. An
        advanced search costs two requests of the RPM budget. 429s carry no Retry-After."""
        state = self.state
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise BadRequest("The request body must be a JSON object.")
        except BadRequest as e:
            state.stats.record(bearer_key(request), SEARCH, Outcome.INVALID)
            return tavily_error(400, e.message)
        api_key = body.get("api_key")
        key = api_key if isinstance(api_key, str) and api_key else bearer_key(request)
        limiter = state.limiter(key)
        if limiter is None:
            state.stats.record(key, SEARCH, Outcome.UNAUTHORIZED)
            return tavily_error(
                state.config.unknown_key_status, "Unauthorized: missing or invalid API key."
            )
        try:
            query, max_results, depth = _parse_search(body)
        except BadRequest as e:
            state.stats.record(key, SEARCH, Outcome.INVALID)
            return tavily_error(400, e.message)
        verdict = limiter.admit(state.now(), requests=2 if depth == "advanced" else 1)
        if isinstance(verdict, Throttled):
            state.stats.record(key, SEARCH, Outcome.THROTTLED, limit=verdict.limit)
            return tavily_error(429, throttled_message(verdict, f"key {mask(key)}"))
        assert key is not None
        latencies = state.config.latencies
        model = latencies.search_advanced if depth == "advanced" else latencies.search_basic
        latency_s = state.latency_s(model)
        failure = await self._work(key, SEARCH, limiter, verdict, latency_s)
        if failure is not None:
            return tavily_error(failure, failure_message(failure))
        hits = content.search_hits(query, max_results, state.config.seed)
        return web.json_response(
            {
                "query": query,
                "follow_up_questions": None,
                "answer": None,
                "images": [],
                "results": [
                    {"title": h.title, "url": h.url, "content": h.content, "score": h.score}
                    for h in hits
                ],
                "response_time": round(latency_s, 3),
            }
        )

    # ------------------------------------------------------------------ reader

    async def read(self, request: web.Request) -> web.Response:
        """Jina reader's ``GET /r/{url}``: ~1 KB of markdown as text/plain. A share
        ``crawl_empty_rate`` of URLs answer an empty body or a 422. 429s carry Retry-After."""
        state, key = self.state, bearer_key(request)
        limiter = state.limiter(key)
        if limiter is None:
            state.stats.record(key, READER, Outcome.UNAUTHORIZED)
            return jina_error(
                state.config.unknown_key_status,
                f"Invalid API key {mask(key)}: send 'Authorization: Bearer KEY'.",
            )
        url = request.match_info["url"]
        if request.query_string:
            url = f"{url}?{request.query_string}"
        if not url:
            state.stats.record(key, READER, Outcome.INVALID)
            return jina_error(400, "No URL given: request /r/https://example.com/page.")
        verdict = limiter.admit(state.now())
        if isinstance(verdict, Throttled):
            state.stats.record(key, READER, Outcome.THROTTLED, limit=verdict.limit)
            return jina_error(
                429,
                throttled_message(verdict, f"key {mask(key)}"),
                headers=retry_after_headers(verdict.retry_after_s, with_ms=False),
            )
        assert key is not None
        outcome = content.crawl_outcome(url, state.config.seed, state.config.crawl_empty_rate)
        unprocessable = outcome is content.CrawlOutcome.UNPROCESSABLE
        failure = await self._work(
            key,
            READER,
            limiter,
            verdict,
            state.latency_s(state.config.latencies.crawl),
            served_as=Outcome.INVALID if unprocessable else Outcome.SERVED,
        )
        if failure is not None:
            return jina_error(failure, failure_message(failure))
        if unprocessable:
            return jina_error(422, f"Failed to get the contents of {url}: nothing to extract.")
        page = "" if outcome is content.CrawlOutcome.EMPTY else content.reader_page(
            url, state.config.seed
        )  # fmt: skip
        return web.Response(text=page, content_type="text/plain")

    # ------------------------------------------------------------------ lifecycle

    async def _work(
        self,
        key: str,
        endpoint: str,
        limiter: KeyLimiter,
        permit: Permit,
        latency_s: float,
        *,
        tokens: int | None = None,
        served_as: Outcome = Outcome.SERVED,
    ) -> int | None:
        """Do an admitted request's work: return a 5xx status at once for a failing one, else
        sleep ``latency_s`` holding the concurrency slot and return None. Always releases the
        slot and counts the outcome, even when the client hangs up (CancelledError)."""
        state = self.state
        failure = state.failure_status()
        outcome = Outcome.CANCELLED
        settled: int | None = None  # a cancelled request keeps its whole charge
        state.stats.begin(key)
        try:
            if failure is not None:
                outcome, settled = Outcome.FAILED, 0
            else:
                await asyncio.sleep(latency_s)
                outcome, settled = served_as, tokens
        finally:
            limiter.release(permit, state.now(), tokens_used=settled)
            state.stats.end(key)
            served_tokens = (settled or 0) if outcome is Outcome.SERVED else 0
            state.stats.record(key, endpoint, outcome, tokens=served_tokens)
        return failure


def _parse_search(body: dict[str, Any]) -> tuple[str, int, str]:
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise BadRequest("'query' is required and must be a non-empty string.")
    max_results = body.get("max_results", 5)
    if (
        not isinstance(max_results, int)
        or isinstance(max_results, bool)
        or not 1 <= max_results <= TAVILY_MAX_RESULTS
    ):
        raise BadRequest(f"'max_results' must be an integer from 1 to {TAVILY_MAX_RESULTS}.")
    depth = body.get("search_depth", "basic")
    if depth not in ("basic", "advanced"):
        raise BadRequest("'search_depth' must be 'basic' or 'advanced'.")
    return query, max_results, depth
