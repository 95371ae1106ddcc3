"""The client's end of ``JobService.Session``: one stream per controller that carries every
submit waiting for its results, and those results (see client.proto).

A job sent this way costs two messages on an open stream instead of a SubmitJob and a WatchJob
call; that is what brings a one-task job's round trip near a millisecond. The stream is only a
faster road: whenever it breaks (the controller restarts or stops leading, the connection drops,
the controller predates Session) each call still open falls back to what the SDK did before, a
SubmitJob (idempotent by job id) and a WatchJob resuming from the last seq the call saw, and the
next submit opens a new stream.

Everything here runs on the client's event loop. One writer task writes the stream's requests
in order: a caller never awaits a write itself, so a caller cancelled meanwhile cannot cancel
one (grpc.aio cancels the whole stream when a write is cancelled, which would break every other
call on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import grpc

from deerflow_controller.client._errors import DeerflowError, from_rpc_error, from_status
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2

EPOCH_METADATA = "deerflow-epoch"
"""Initial metadata of WatchJob and Session in HA mode: the epoch their seq numbers count in."""

SESSION_MAX_TASKS = 1024
"""The largest job the SDK sends over its Session stream. The stream's reader takes every reply
as it comes (one job's results cannot wait there without stalling the others'), so a call's
unread results are held in the client: up to this many per job. A larger job gets a WatchJob
of its own, paced to its reader by gRPC's flow control; its round trip gains nothing from the
shared stream anyway (DeerFlow's research report is 50-150 tasks, a tool call one)."""


class SessionBroken(Exception):
    """The stream ended before this call's end: go on through SubmitJob and WatchJob."""


@dataclass(eq=False)
class SessionCall:
    """One job's submit and events on a :class:`ClientSession`."""

    session: ClientSession
    number: int
    accepted: asyncio.Future[client_pb2.SubmitJobResponse | None]
    """The acknowledgement; None when the call ended (or the stream broke) before it."""
    replies: asyncio.Queue[common_pb2.TaskEventBatch | None] = field(default_factory=asyncio.Queue)
    """The job's event messages; None after the last (see :attr:`end`)."""
    end: client_pb2.SessionEnd | None = None
    """How the call ended (None while open, or when the stream broke)."""
    over: bool = False

    def finish(self, end: client_pb2.SessionEnd | None) -> None:
        """The call's last reply (``end``), or None: the stream broke."""
        self.over = True
        self.end = end
        if not self.accepted.done():
            self.accepted.set_result(None)
        self.replies.put_nowait(None)

    def refusal(self) -> DeerflowError | None:
        """The error a call that ended without success must raise; None when it ended well
        or must fall back (the stream broke, or the controller could not go on: UNAVAILABLE).
        A stream ended for its credential (revoked, say) is that error: a fall back would be
        refused the same way, in words that say less."""
        end = self.end
        if end is None:
            error = self.session.error
            if error is not None and error.code() in _CREDENTIAL_CODES:
                return from_rpc_error(error, self.session.address)
            return None
        if end.code in (_OK, _UNAVAILABLE):
            return None
        code = _CODES.get(end.code, grpc.StatusCode.UNKNOWN)
        return from_status(code, end.message, self.session.address)

    async def next(self, deadline: float | None) -> common_pb2.TaskEventBatch | None:
        """The call's next event message; None once the job is done and all were read.
        Raises :class:`SessionBroken` (fall back), the call's error, or TimeoutError when the
        loop's clock passes ``deadline`` first."""
        if deadline is None:
            batch = await self.replies.get()
        else:
            async with asyncio.timeout_at(deadline):
                batch = await self.replies.get()
        if batch is not None:
            return batch
        self.replies.put_nowait(None)  # a later read sees the end again
        error = self.refusal()
        if error is not None:
            raise error
        if self.end is None or self.end.code != _OK:
            raise SessionBroken
        return None

    def done(self) -> bool:
        """Over: ended, broken, or cancelled here (as a gRPC call's ``done()``)."""
        return self.over

    def cancel(self, *, job: bool = False) -> None:
        """Stop this call's events (the job runs on; with ``job``, cancel the job instead, in
        order after its submit); nothing once it is over."""
        if not self.over:
            self.over = True
            self.session.stop(self.number, cancel_job=job)


_OK = grpc.StatusCode.OK.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_CREDENTIAL_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ClientSession:
    """One open Session stream to the controller at ``address``."""

    def __init__(
        self,
        stub: client_pb2_grpc.JobServiceStub,
        metadata: tuple[tuple[str, str], ...],
        address: str,
    ) -> None:
        self.address = address
        self.broken = False
        self.unimplemented = False
        """The controller does not know Session (it predates it): do not ask it again."""
        self.error: grpc.aio.AioRpcError | None = None
        """How the stream ended, once it did with a status (None while open, or cancelled)."""
        self.epoch = ""
        """HA mode: the epoch this stream's seq numbers count in (for the fallback's resume)."""
        self._call: Any = stub.Session(metadata=metadata)
        self._calls: dict[int, SessionCall] = {}
        self._numbers = itertools.count(1)
        self._outbox: asyncio.Queue[client_pb2.SessionRequest] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._writer = loop.create_task(self._write())

    def start(self, request: client_pb2.SubmitJobRequest, flt: int) -> SessionCall:
        """Send the submit (queued for the writer); its acknowledgement and events arrive on
        the returned call. Raises :class:`SessionBroken` when the stream is broken."""
        if self.broken:
            raise SessionBroken
        call = SessionCall(self, next(self._numbers), asyncio.get_running_loop().create_future())
        self._calls[call.number] = call
        self._outbox.put_nowait(
            client_pb2.SessionRequest(call=call.number, submit=request, filter=flt)  # type: ignore[arg-type]
        )
        return call

    def stop(self, number: int, *, cancel_job: bool = False) -> None:
        """Ask for no more of call ``number``'s events (with ``cancel_job``: for its job to be
        cancelled; the controller then sends the rest, unread here)."""
        if self._calls.pop(number, None) is not None and not self.broken:
            stop = client_pb2.SessionStop(cancel_job=cancel_job)
            self._outbox.put_nowait(client_pb2.SessionRequest(call=number, stop=stop))

    async def _write(self) -> None:
        """Write the queued requests in order until the stream ends; a write that fails ends
        it (the reader then breaks every open call: they fall back)."""
        try:
            while True:
                message = await self._outbox.get()
                await self._call.write(message)
        except asyncio.CancelledError:
            pass
        except Exception:  # whatever gRPC raises, the stream is over
            self._call.cancel()

    async def _read(self) -> None:
        call = self._call
        calls = self._calls
        try:
            self.epoch = metadata_value(await call.initial_metadata(), EPOCH_METADATA)
            while (reply := await call.read()) is not grpc.aio.EOF:
                one = calls.get(reply.call)
                if one is None:
                    continue  # stopped here meanwhile
                if reply.HasField("accepted") and not one.accepted.done():
                    one.accepted.set_result(reply.accepted)
                if reply.HasField("events"):
                    one.replies.put_nowait(reply.events)
                if reply.HasField("end"):
                    del calls[reply.call]
                    one.finish(reply.end)
        except grpc.aio.AioRpcError as e:
            self.error = e
            self.unimplemented = e.code() == grpc.StatusCode.UNIMPLEMENTED
        except asyncio.CancelledError:
            pass
        finally:
            self.broken = True
            for one in calls.values():
                one.finish(None)
            calls.clear()

    async def close(self) -> None:
        """End the stream; calls still open fall back (a closing client has no readers)."""
        self.broken = True
        self._call.cancel()
        self._writer.cancel()
        for task in (self._reader, self._writer):
            with contextlib.suppress(BaseException):
                await task


def metadata_value(metadata: Any, key: str) -> str:
    """The value of ``key`` in gRPC ``metadata`` ("" when absent)."""
    for k, v in metadata or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return ""


class Sessions:
    """A client's Session streams: one per controller address, opened on first use and again
    after a break; none to a controller that does not serve Session."""

    def __init__(self) -> None:
        self._open: dict[str, ClientSession] = {}
        self._unserved: set[str] = set()

    def get(
        self,
        stub: client_pb2_grpc.JobServiceStub,
        metadata: tuple[tuple[str, str], ...],
        address: str,
    ) -> ClientSession | None:
        """The open stream to ``address`` (opened now when there is none, or the last one
        broke); None when that controller does not serve Session."""
        if address in self._unserved:
            return None
        session = self._open.get(address)
        if session is None or session.broken:
            if session is not None and session.unimplemented:
                self._unserved.add(address)
                return None
            session = self._open[address] = ClientSession(stub, metadata, address)
        return session

    async def submit(
        self,
        stub: client_pb2_grpc.JobServiceStub,
        metadata: tuple[tuple[str, str], ...],
        address: str,
        request: client_pb2.SubmitJobRequest,
        flt: int,
        deadline: float | None,
        *,
        cancel_if_abandoned: bool = False,
    ) -> tuple[client_pb2.SubmitJobResponse, SessionCall] | None:
        """Submit over the stream to ``address``: the acknowledgement and the call the job's
        events arrive on, or None when the stream broke first (go on through SubmitJob and
        WatchJob, same job id). Raises what SubmitJob would: the controller's refusal, or
        DeadlineExceededError once the loop's clock passes ``deadline``."""
        session = self.get(stub, metadata, address)
        if session is None:
            return None
        try:
            call = session.start(request, flt)
        except SessionBroken:
            return None
        try:
            if deadline is None:
                accepted = await call.accepted
            else:
                async with asyncio.timeout_at(deadline):
                    accepted = await call.accepted
        except TimeoutError:
            call.cancel(job=cancel_if_abandoned)
            raise from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "", address) from None
        except BaseException:
            call.cancel(job=cancel_if_abandoned)
            raise
        if accepted is None:
            error = call.refusal()
            if error is not None:
                raise error
            return None
        return accepted, call

    async def close(self) -> None:
        for session in self._open.values():
            await session.close()
        self._open.clear()
