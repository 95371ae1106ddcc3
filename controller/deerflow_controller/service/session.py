"""JobService.Session served: many jobs over one client stream (see client.proto).

Each ``SessionRequest`` with a ``submit`` becomes a *call*: the job is accepted exactly as a
SubmitJob (``JobService.accept``, and in HA mode journaled before it is acknowledged, through
the leader gate's :class:`SessionHooks`), then its events go out as a WatchJob's would
(``JobService.watch``), each reply tagged with the call's number, until the call's ``end``.

One task per call, each writing its own replies (a lock keeps two writes from overlapping, as
gRPC allows one at a time). A call waits for each reply to be written before it builds the
next, so a client that stops reading holds at most one message per call (and its calls count
against the watch-stream limits, as WatchJobs do).

How a session ends: when the client half-closes and its calls are done (OK); at a protocol
error (a call number that is 0 or in use, a request with neither submit nor stop) with
INVALID_ARGUMENT, jobs already accepted running on; when this controller stops leading
(``SchedulerReplaced``, which the leader gate turns into UNAVAILABLE naming the next leader);
when the client cancels it or its credential is revoked (the handler's task is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc

from deerflow_controller.core.model import TERMINAL_STATES, Job
from deerflow_controller.core.validation import quote
from deerflow_controller.service.credentials import Principal
from deerflow_controller.service.refused import Refused
from deerflow_controller.service.shell import SchedulerReplaced
from deerflow_controller.service.streams import TooManyStreams, stream_owner
from deerflow_protos import client_pb2

if TYPE_CHECKING:
    from deerflow_controller.service.job_service import JobService

log = logging.getLogger(__name__)


class SessionHooks(Protocol):
    """What a Session's submits owe the journal in HA mode (the leader gate provides it for the
    term the session was opened in)."""

    def check(self, request: client_pb2.SubmitJobRequest) -> None:
        """Raise ``Refused`` when the job is too large to journal (before it is accepted)."""

    async def acknowledged(
        self, request: client_pb2.SubmitJobRequest, response: client_pb2.SubmitJobResponse
    ) -> None:
        """Return once the accepted job is journaled; raise ``Refused`` when it cannot be."""

    def delivered(self, job_id: str) -> None:
        """Every event of the job was sent to a watcher."""


session_hooks: contextvars.ContextVar[SessionHooks | None] = contextvars.ContextVar(
    "deerflow_session_hooks", default=None
)
"""Set by the leader gate around a Session call in HA mode; None otherwise."""


class _StreamGone(Exception):
    """A write failed: the stream is over (the client went away); end quietly."""


@dataclass(eq=False)
class _Call:
    """One call being served: its task, and whether a stop waits for its write to finish."""

    task: asyncio.Task[None] | None = None
    writing: bool = False
    stopped: bool = False
    job_id: str = ""
    """The job's id once accepted."""
    cancel_job: bool = False
    """The client asked for the job to be cancelled (``SessionStop.cancel_job``)."""

    def stop(self) -> None:
        """End the call's events. Never while its write is in flight: a write cancelled there
        stays in gRPC's core, and the next one on the stream would be refused; the call then
        ends after that write instead."""
        self.stopped = True
        if not self.writing and self.task is not None:
            self.task.cancel()


class ServedSession:
    """One Session stream being served (see the module docstring)."""

    def __init__(
        self, service: JobService, context: grpc.aio.ServicerContext, who: Principal | None
    ) -> None:
        self.service = service
        self.context = context
        self.who = who
        self.hooks = session_hooks.get()
        self.calls: dict[int, _Call] = {}
        self.reading = True
        self.failure: BaseException | None = None
        self._over = asyncio.Event()
        self._writing = asyncio.Lock()

    async def run(self, requests: AsyncIterator[client_pb2.SessionRequest]) -> None:
        """Serve the stream until it ends; raises ``Refused`` (a protocol error) or
        ``SchedulerReplaced`` (this controller stopped leading) to end it with a status."""
        reader = asyncio.create_task(self._read(requests))
        try:
            await self._over.wait()
        finally:
            reader.cancel()
            for call in list(self.calls.values()):
                call.stop()  # at once, or after its write in flight
            # The stream's status must not go out across a write still in gRPC's core (it
            # would be refused, TOO_MANY_OPERATIONS, and the client would wait for good).
            async with self._writing:
                pass
        if self.failure is not None and not isinstance(self.failure, _StreamGone):
            raise self.failure

    async def _read(self, requests: AsyncIterator[client_pb2.SessionRequest]) -> None:
        calls = self.calls
        try:
            async for request in requests:
                number = request.call
                body = request.WhichOneof("body")
                if body == "stop":
                    call = calls.get(number)
                    if call is None:
                        continue  # ended meanwhile
                    if request.stop.cancel_job:
                        # The call goes on to its job's end: its CANCELLED events.
                        call.cancel_job = True
                        if call.job_id:
                            self._cancel(call.job_id)
                    else:
                        call.stop()
                    continue
                if number == 0 or number in calls:
                    why = "is reserved" if number == 0 else "is still in use on this stream"
                    self._fail(
                        Refused(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"SessionRequest call number {number} {why}; give each submit a new "
                            "non-zero number (jobs already accepted run on: watch them with "
                            "WatchJob)",
                        )
                    )
                    return
                if body != "submit":
                    self._fail(
                        Refused(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"SessionRequest call {number} carries neither a submit nor a stop; "
                            "send one of them",
                        )
                    )
                    return
                terminal_only = request.filter == client_pb2.TERMINAL
                call = calls[number] = _Call()
                call.task = asyncio.create_task(
                    self._serve(number, call, request.submit, terminal_only)
                )
        finally:
            self.reading = False
            if not calls:
                self._over.set()

    def _cancel(self, job_id: str) -> None:
        self.service.shell.cancel(
            job_id, None, "the client gave up on the job while submitting it (Session stop)"
        )

    def _fail(self, error: BaseException) -> None:
        """End the session with ``error`` (replies being written are written first)."""
        if self.failure is None:
            self.failure = error
            self._over.set()

    async def _send(self, call: _Call, reply: client_pb2.SessionReply) -> None:
        """Write ``reply`` (one write at a time on the stream); raises CancelledError after it
        when the call was stopped meanwhile, ``_StreamGone`` when the stream is over."""
        async with self._writing:
            call.writing = True
            try:
                await self.context.write(reply)
            except Exception as e:
                raise _StreamGone(str(e)) from None
            finally:
                call.writing = False
        if call.stopped:
            raise asyncio.CancelledError

    async def _serve(
        self, number: int, call: _Call, request: client_pb2.SubmitJobRequest, terminal_only: bool
    ) -> None:
        """Serve one call to its end; whatever happens, the client is told how it ended (or
        the whole stream ends), never left waiting on it."""
        try:
            try:
                await self._call(number, call, request, terminal_only)
            except Refused as e:
                end = client_pb2.SessionEnd(code=e.code.value[0], message=e.message)
                await self._send(call, client_pb2.SessionReply(call=number, end=end))
        except (SchedulerReplaced, _StreamGone) as e:
            self._fail(e)
        except Exception:
            # A defect here must not leave the client waiting on this call for ever.
            log.exception("session call %d failed; ending it with INTERNAL", number)
            end = client_pb2.SessionEnd(
                code=grpc.StatusCode.INTERNAL.value[0],
                message="the controller failed while serving this job's call (its log says "
                "why); watch the job with WatchJob, or resubmit it with the same job id",
            )
            with contextlib.suppress(_StreamGone, asyncio.CancelledError):
                await self._send(call, client_pb2.SessionReply(call=number, end=end))
        finally:
            del self.calls[number]
            if not self.reading and not self.calls:
                self._over.set()

    async def _call(
        self, number: int, call: _Call, request: client_pb2.SubmitJobRequest, terminal_only: bool
    ) -> None:
        """Accept the job and send its events; raises ``Refused`` to end only this call."""
        service = self.service
        hooks = self.hooks
        if hooks is not None:
            hooks.check(request)
        streams = service.streams
        try:
            host = streams.open(self.context.peer(), stream_owner(self.who))
        except TooManyStreams as e:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        try:
            # The client waits on this call's results, not on the acknowledgement.
            request.watching = True
            scheduler = service.shell.scheduler  # the term's: a later one is not this job's
            response = await service.accept(request, self.who)
            if hooks is not None:
                await hooks.acknowledged(request, response)
            if service.shell.scheduler is not scheduler:
                raise SchedulerReplaced(
                    f"job {quote(response.job_id)} was accepted as a term ended"
                )
            call.job_id = response.job_id
            if call.cancel_job:
                self._cancel(response.job_id)
            job = service.shell.job(response.job_id)
            if job is None:
                raise Refused(
                    grpc.StatusCode.NOT_FOUND,
                    f"job {quote(response.job_id)} was forgotten as soon as it was accepted "
                    "(finished longer ago than its retention); resubmit it with a new job id",
                )
            # The acknowledgement goes with the first events when some are there already
            # (all events: the job's QUEUED and DISPATCHED), else on its own at once.
            ack = response if _events_ready(service, job, terminal_only) else None
            if ack is None:
                await self._send(call, client_pb2.SessionReply(call=number, accepted=response))
            ended = False
            watch = service.watch(job, 0, terminal_only=terminal_only, scheduler=scheduler)
            async for batch, last in watch:
                reply = client_pb2.SessionReply(call=number, accepted=ack, events=batch)
                ack = None
                if last:
                    # The job's last events and the call's end in one message.
                    reply.end.SetInParent()
                    ended = True
                await self._send(call, reply)
            if hooks is not None:
                hooks.delivered(job.id)
            if not ended:
                end = client_pb2.SessionEnd()
                await self._send(call, client_pb2.SessionReply(call=number, end=end))
        finally:
            streams.close(host)


def _events_ready(service: JobService, job: Job, terminal_only: bool) -> bool:
    """Has the job events a watch with this filter would send now?"""
    limit = service.shell.deliverable(job)
    if not terminal_only:
        return limit > 0
    events = job.events
    return any(events[i].state in TERMINAL_STATES for i in range(limit))
