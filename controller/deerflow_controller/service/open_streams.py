"""The streaming calls open now, by the principal each was admitted as, so that a change of the
credentials (``--auth-file`` reloaded) ends those whose credential no longer admits them.

A streaming call (an agent's ``Connect``, a client's ``WatchJob``, ``FetchInput``) is admitted
once, when it opens (``service.auth``); it may then run for hours. The interceptor registers each
one here with what it was admitted on (method, token, certificate identity) and as whom, and
:meth:`OpenStreams.revoke` walks them when the credentials change: a stream whose credential is
gone, or now admits another tenant or role, ends with the status and sentence the interceptor
decides (UNAUTHENTICATED, or PERMISSION_DENIED when the role no longer allows the call). The
check runs per reload, never per message, and once per distinct credential however many streams
share it.

Ending a stream: a task of this registry's own cancels the handler's task and starts sending
the status, without yielding in between, so the handler wakes only to its cancellation (and ends
the call as it ends any broken stream: an agent's session closes and its unfinished attempts run
elsewhere, a watch gives back its place) and cannot finish with a status of its own first.
``context.abort`` from the handler's own task would need the handler to wake, which an idle
stream never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from deerflow_controller.service.credentials import Principal

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class OpenStream:
    """One streaming call in flight and what it was admitted on."""

    method: str
    token: str
    """The bearer token it presented ("" without one); the call's metadata holds it for as long
    anyway. Never logged."""
    identity: str | None
    """The verified client-certificate identity it had (None without mutual TLS)."""
    principal: Principal
    context: grpc.aio.ServicerContext
    task: asyncio.Task[Any]
    """The task running the call's handler."""
    open: bool = True
    """False once the handler returned (or the stream was ended here)."""


Verdict = tuple[grpc.StatusCode, str] | None
"""How a stream must end (its status and the sentence for the caller), or None: it stays."""

Judge = Callable[[OpenStream], Verdict]


@dataclass
class OpenStreams:
    """The open streaming calls, by principal (see the module docstring)."""

    by_principal: dict[Principal, set[OpenStream]] = field(default_factory=dict)
    _ending: set[asyncio.Task[None]] = field(default_factory=set)
    """The tasks sending the statuses of streams being ended (held until done)."""

    def open(
        self,
        method: str,
        token: str,
        identity: str | None,
        principal: Principal,
        context: grpc.aio.ServicerContext,
    ) -> OpenStream:
        """Register the current task's call; pass the result to :meth:`close` when it ends."""
        task = asyncio.current_task()
        assert task is not None, "a stream opens in its handler's task"
        stream = OpenStream(method, token, identity, principal, context, task)
        self.by_principal.setdefault(principal, set()).add(stream)
        return stream

    def close(self, stream: OpenStream) -> None:
        """The handler is done with ``stream`` (from its ``finally``)."""
        stream.open = False
        self._forget(stream)

    def _forget(self, stream: OpenStream) -> None:
        streams = self.by_principal.get(stream.principal)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self.by_principal[stream.principal]

    def revoke(self, judge: Judge) -> int:
        """End every open stream ``judge`` gives a verdict against; returns how many. ``judge``
        is asked once per distinct principal and credential (method, token, identity): streams
        that share one share its verdict. Does not block: the statuses go out from tasks."""
        verdicts: dict[tuple[Principal, str, str, str | None], Verdict] = {}
        doomed: list[tuple[OpenStream, tuple[grpc.StatusCode, str]]] = []
        for principal, streams in self.by_principal.items():
            for stream in streams:
                key = (principal, stream.method, stream.token, stream.identity)
                if key not in verdicts:
                    verdicts[key] = judge(stream)
                verdict = verdicts[key]
                if verdict is not None:
                    doomed.append((stream, verdict))
        for stream, (code, message) in doomed:
            self._end(stream, code, message)
        return len(doomed)

    def _end(self, stream: OpenStream, code: grpc.StatusCode, message: str) -> None:
        self._forget(stream)
        log.info(
            "ending %s of %s %r: its credential was revoked or changed (%s)",
            stream.method.rsplit("/", 1)[-1],
            stream.principal.role.value,
            stream.principal.name,
            code.name,
        )
        ending = asyncio.get_running_loop().create_task(self._abort(stream, code, message))
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    @staticmethod
    async def _abort(stream: OpenStream, code: grpc.StatusCode, message: str) -> None:
        """Cancel the handler and send the status, in one step of the loop: the handler cannot
        finish (and send its own status) in between, and wakes only to its cancellation."""
        if not stream.open or stream.task.done():
            return  # it ended by itself meanwhile
        stream.open = False
        stream.task.cancel()
        # AbortError: the status went out (abort raises it in its caller, this task); other
        # errors of grpc's (UsageError: the handler was aborting already, with its own
        # status; the call or the server gone) leave nothing to end.
        with contextlib.suppress(grpc.aio.BaseError):
            await stream.context.abort(code, message)
