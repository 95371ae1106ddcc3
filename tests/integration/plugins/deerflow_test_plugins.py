"""Handlers installed on test agents with --handler deerflow_test_plugins:NAME."""

from __future__ import annotations

from deerflow_agent import FatalError, TaskContext, handler


@handler("shout")
async def shout(ctx: TaskContext, payload: bytes) -> bytes:
    return payload.upper()


@handler("always_fails")
async def always_fails(ctx: TaskContext, payload: bytes) -> bytes:
    raise FatalError(f"always_fails refuses {payload.decode(errors='replace')!r}")
