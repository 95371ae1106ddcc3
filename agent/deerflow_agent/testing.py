"""Test a handler without a controller or an agent.

::

    from deerflow_agent.testing import HandlerEnvironment
    from mypkg.handlers import search

    async def test_search_returns_hits():
        out = await HandlerEnvironment().run(search, b'{"query": "deerflow"}')
        assert json.loads(out)["hits"]

The environment calls the handler the way the agent does (same context, same return checks) and
re-raises what the handler raised, so tests can assert on :class:`HandlerError` and
:class:`FatalError` (and their ``error_class``). Progress an io handler reports through
``ctx.progress`` is recorded, unthrottled, in :attr:`HandlerEnvironment.progress`; ``run(...,
inputs={"search-1": b"..."})`` gives the handler its dependencies' outputs as ``ctx.inputs``;
:meth:`HandlerEnvironment.run_split` runs a task split into parts and merged as the controller
would. URLs in payloads obey the agent's address policy: ``HandlerEnvironment(http_allow=
"127.0.0.1/32")`` lets a handler under test reach a server on loopback, as ``--http-allow`` does
on an agent. CPU handlers run in this process, in a thread, so no pool is involved, but
the environment still checks that the function can be imported by name as the agent's pool
requires.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import cast

from deerflow_common.errors import AttemptKey

from ._context import TaskContext
from ._errors import FatalError
from ._handler import (
    CpuHandlerFn,
    Handler,
    HandlerKind,
    HandlerResult,
    IoHandlerFn,
    coerce_output,
    cpu_target,
)
from ._inputs import NO_INPUTS, Inputs
from ._netpolicy import AddressPolicy
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
        http_allow: str | Sequence[str] = (),
    ) -> None:
        """``http_allow`` is the agent's ``--http-allow``: networks that URLs in payloads may
        lead to besides public addresses (``"127.0.0.1/32"`` for a test server on loopback).
        Raises ValueError for an entry that is not a network."""
        self.job_id = job_id
        self.task_id = task_id
        self.attempt = attempt
        self.trace_context = dict(trace_context or {})
        self.address_policy = AddressPolicy.parse(http_allow)
        self.progress: list[tuple[float, str]] = []
        """Every ``ctx.progress(fraction, message)`` of the runs so far, in order, as the agent
        would send it (fraction clamped to 0-1, -1 when unknown)."""

    def report_progress(self, key: AttemptKey, fraction: float, message: str) -> None:
        """The :class:`ProgressSink` side: record the report."""
        self.progress.append((fraction, message))

    async def run(
        self,
        handler: Handler | IoHandlerFn,
        payload: bytes,
        *,
        timeout_s: float = 30.0,
        inputs: Mapping[str, bytes] | None = None,
    ) -> bytes:
        """The handler's output for ``payload``. Raises what the handler raised, FatalError for
        a bad return value, and TimeoutError after ``timeout_s`` (an io handler is cancelled
        then; a cpu handler's thread cannot be and finishes in the background).

        ``inputs`` are the dependencies' outputs the task would read, by task id, in the order
        given (its ``depends_on`` order): an io handler sees them as ``ctx.inputs``. A cpu
        handler given inputs raises FatalError, as on an agent (it gets no context)."""
        result = await self.run_result(handler, payload, timeout_s=timeout_s, inputs=inputs)
        return result.output

    async def run_result(
        self,
        handler: Handler | IoHandlerFn,
        payload: bytes,
        *,
        timeout_s: float = 30.0,
        inputs: Mapping[str, bytes] | None = None,
    ) -> HandlerResult:
        """Like :meth:`run`, with the metadata a handler returned in a HandlerResult."""
        h = as_handler(handler, "the handler under test")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        for name, data in (inputs or {}).items():
            if not isinstance(data, bytes):
                raise TypeError(f"input {name!r} must be bytes, got {type(data).__name__}")
        if h.kind is HandlerKind.CPU and inputs:
            raise FatalError(
                f"handler {h.name!r} is a cpu handler, which gets no context to read inputs; "
                "read them in an io handler (ctx.inputs)"
            )
        if h.kind is HandlerKind.CPU:
            cpu_target(h)
            fn = cast(CpuHandlerFn, h.fn)
            value: object = await asyncio.wait_for(asyncio.to_thread(fn, payload), timeout_s)
        else:
            deadline = asyncio.get_running_loop().time() + timeout_s
            ctx = TaskContext(
                self.job_id,
                self.task_id,
                self.attempt,
                deadline,
                h.name,
                self.trace_context,
                self,
                inputs=Inputs(inputs.items()) if inputs else NO_INPUTS,
                address_policy=self.address_policy,
                payload=payload,
            )
            async with asyncio.timeout_at(deadline):
                value = await cast(IoHandlerFn, h.fn)(ctx, payload)
        return coerce_output(h.name, value)

    async def run_split(
        self, handler: Handler, payload: bytes, *, chunk: int = 1, timeout_s: float = 30.0
    ) -> bytes:
        """Run ``payload`` the way the controller's decomposer may: cut by the handler's splitter
        (or its ``items_field`` list in slices of ``chunk`` items, other fields kept), each part
        run in turn, and the outputs joined by the handler's merger. Raises ValueError when the
        handler declares neither, and what the splitter, a part or the merger raised."""
        if handler.merger is None:
            raise ValueError(f"handler {handler.name!r} declares no merger: it is never split")
        parts: list[bytes] = []
        if handler.splitter is not None:
            for part in handler.splitter(payload):
                body = part if isinstance(part, bytes) else getattr(part, "payload", None)
                if not isinstance(body, bytes):
                    raise TypeError(f"the splitter of {handler.name!r} gave a part without bytes")
                parts.append(body)
        else:
            doc = json.loads(payload)
            items = doc[handler.items_field]
            for i in range(0, len(items), max(1, chunk)):
                parts.append(
                    json.dumps({**doc, handler.items_field: items[i : i + chunk]}).encode()
                )
        outputs: list[bytes | None] = [
            await self.run(handler, part, timeout_s=timeout_s) for part in parts
        ]
        return handler.merger(outputs)
