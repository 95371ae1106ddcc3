"""Handlers installed on test agents with --handler deerflow_test_plugins:NAME."""

from __future__ import annotations

import asyncio

from deerflow_agent import FatalError, TaskContext, handler


@handler("shout")
async def shout(ctx: TaskContext, payload: bytes) -> bytes:
    return payload.upper()


@handler("always_fails")
async def always_fails(ctx: TaskContext, payload: bytes) -> bytes:
    raise FatalError(f"always_fails refuses {payload.decode(errors='replace')!r}")


@handler("hangs_first_attempt")
async def hangs_first_attempt(ctx: TaskContext, payload: bytes) -> bytes:
    """Attempt 1 runs until cancelled (or its agent is gone); any later one returns at once:
    a task pinned to the agent it first went to, until that agent is lost."""
    if ctx.attempt == 1:
        await asyncio.Event().wait()
    return payload
