"""Handlers installed on test agents with --handler obs_test_plugins:NAME."""

from __future__ import annotations

import json

from deerflow_agent import FatalError, HandlerError, HandlerResult, TaskContext, handler


@handler("flaky")
async def flaky(ctx: TaskContext, payload: bytes) -> bytes:
    """Fails its first attempt (as a provider answering 429 would), succeeds after."""
    if ctx.attempt == 1:
        raise HandlerError("provider said 429", retry_after_s=0.05, metadata={"http.status": "429"})
    return payload


@handler("provider_ok")
async def provider_ok(ctx: TaskContext, payload: bytes) -> HandlerResult:
    """Succeeds as a provider call that reports its status and token use."""
    return HandlerResult(payload, metadata={"http.status": "200", "usage.total_tokens": "42"})


@handler("context_echo")
async def context_echo(ctx: TaskContext, payload: bytes) -> bytes:
    """Returns the traceparent it was given to pass on (its execute span's context)."""
    return ctx.trace_context.get("traceparent", "").encode()


@handler("careless")
async def careless(ctx: TaskContext, payload: bytes) -> bytes:
    """A plugin written without a thought for secrets: it logs its whole payload and fails with
    the payload in its message (the agent must mask the payload's api_key in both)."""
    doc = json.loads(payload)
    ctx.logger.warning("careless got %s", doc)
    raise ValueError(f"careless cannot handle {doc}")


@handler("refuses")
async def refuses(ctx: TaskContext, payload: bytes) -> bytes:
    """Fails at once and for good, saying why (a provider refusing the request)."""
    raise FatalError(f"the provider refused {payload.decode(errors='replace')!r}: quota exhausted")
