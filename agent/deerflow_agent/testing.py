"""Test a handler without a controller or an agent.

::

    from deerflow_agent.testing import HandlerEnvironment
    from mypkg.handlers import search

    async def test_search_returns_hits():
        out = await HandlerEnvironment().run(search, b'{"query": "deerflow"}')
        assert json.loads(out)["hits"]

The environment calls the handler the way the agent does (same context, same return checks) and
re-raises what the handler raised, so tests can assert on :class:`HandlerError` and
:class:`FatalError`. CPU handlers run in this process, in a thread, so no pool is involved, but
the environment still checks that the function can be imported by name as the agent's pool
requires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

from ._handler import (
    CpuHandlerFn,
    Handler,
    HandlerKind,
    HandlerResult,
    IoHandlerFn,
    TaskContext,
    coerce_output,
    cpu_target,
)
from .registry import as_handler

__all__ = ["HandlerEnvironment"]


class HandlerEnvironment:
    """Runs handlers on payloads as one agent would, with a fake attempt identity."""

    def __init__(
        self,
        *,
        job_id: str = "test-job",
        task_id: str = "test-task",
        attempt: int = 1,
        trace_context: Mapping[str, str] | None = None,
    ) -> None:
        self.job_id = job_id
        self.task_id = task_id
        self.attempt = attempt
        self.trace_context = dict(trace_context or {})

    async def run(
        self, handler: Handler | IoHandlerFn, payload: bytes, *, timeout_s: float = 30.0
    ) -> bytes:
        """The handler's output for ``payload``. Raises what the handler raised, FatalError for
        a bad return value, and TimeoutError after ``timeout_s`` (an io handler is cancelled
        then; a cpu handler's thread cannot be and finishes in the background)."""
        return (await self.run_result(handler, payload, timeout_s=timeout_s)).output

    async def run_result(
        self, handler: Handler | IoHandlerFn, payload: bytes, *, timeout_s: float = 30.0
    ) -> HandlerResult:
        """Like :meth:`run`, with the metadata a handler returned in a HandlerResult."""
        h = as_handler(handler, "the handler under test")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if h.kind is HandlerKind.CPU:
            cpu_target(h)
            fn = cast(CpuHandlerFn, h.fn)
            value: object = await asyncio.wait_for(asyncio.to_thread(fn, payload), timeout_s)
        else:
            deadline = asyncio.get_running_loop().time() + timeout_s
            ctx = TaskContext(
                self.job_id, self.task_id, self.attempt, deadline, h.name, self.trace_context
            )
            async with asyncio.timeout_at(deadline):
                value = await cast(IoHandlerFn, h.fn)(ctx, payload)
        return coerce_output(h.name, value)
