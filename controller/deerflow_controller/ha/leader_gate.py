"""The gate in front of the controller's services in HA mode: only the leader serves.

A gRPC server interceptor, so the services themselves know nothing of leadership:

- On a standby (or a leader still restoring), JobService, AgentService and AdminService calls
  end with UNAVAILABLE, a sentence naming the leader, and the trailing metadata
  ``deerflow-leader: host:port``, which the SDK and the agents follow. A standby that knows no
  leader yet waits up to ``SUCCESSOR_WAIT_S`` for one before it refuses. Health and reflection
  always answer (health says NOT_SERVING).
- SubmitJob is acknowledged only after the job is journaled (group commit), and a job too large
  to journal is refused before anything is accepted; the same holds for each submit of a
  Session stream (the gate hands the service its term's hooks, ``service.session``).
- WatchJob tells the client the epoch its ``seq`` numbers belong to (initial metadata
  ``deerflow-epoch``); a client resuming with a cursor of another epoch (a failover happened)
  is replayed the job's log from the start, and the SDK drops what it already delivered by task
  id. A watch whose term ends is ended once with UNAVAILABLE, like a standby's refusal: the
  new leader's address in ``deerflow-leader`` (trailing metadata, and in the sentence) when
  this controller learns it within ``SUCCESSOR_WAIT_S``, no such metadata when none is known.
  A Session stream is told its epoch and ended the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from deerflow_controller.ha.journal import Journal, JournalClosed, JournalRecordTooLarge
from deerflow_controller.service.refused import Refused
from deerflow_controller.service.session import session_hooks
from deerflow_controller.service.shell import SchedulerReplaced
from deerflow_protos import client_pb2

log = logging.getLogger(__name__)

LEADER_METADATA = "deerflow-leader"
EPOCH_METADATA = "deerflow-epoch"

_GUARDED = ("/deerflow.v1.JobService/", "/deerflow.v1.AgentService/", "/deerflow.v1.AdminService/")
_SUBMIT = "/deerflow.v1.JobService/SubmitJob"
_WATCH = "/deerflow.v1.JobService/WatchJob"
_SESSION = "/deerflow.v1.JobService/Session"

SUCCESSOR_WAIT_S = 1.0
"""How long a refused call (on a standby that knows no leader yet, or a watch whose term ended)
waits for the leader's address before it is refused without one. A resigning leader's successor
is elected within milliseconds of the lease's revocation; after a lost lease (etcd unreachable)
nobody is elected for longer, and the SDK retries its address list meanwhile, so waiting more
would only delay it."""


@dataclass(eq=False)
class Term:
    """One leadership term of this controller: its epoch, its journal, and its end."""

    epoch: int
    journal: Journal | None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    on_delivered: Callable[[str], None] = lambda job_id: None


class LeaderGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Lets calls through while this controller leads (``term`` is set), refuses them
    otherwise."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.term: Term | None = None
        self._leader_address = ""
        self._leader_known = asyncio.Event()
        self._successor_waits = 0

    @property
    def leader_address(self) -> str:
        """The leader as this controller last observed it ("" when unknown)."""
        return self._leader_address

    @leader_address.setter
    def leader_address(self, address: str) -> None:
        self._leader_address = address
        if address:
            self._leader_known.set()
        else:
            self._leader_known.clear()

    async def successor_known(self) -> None:
        """Block until a leader is known or ``SUCCESSOR_WAIT_S`` passed; at once when no
        watch waits for one. A stopping controller keeps observing the leader key until then,
        so the watches it ends can name its successor."""
        if self._successor_waits:
            await self._leader_or_timeout()

    async def _leader_or_timeout(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUCCESSOR_WAIT_S):
                await self._leader_known.wait()

    def refusal(self) -> str:
        if self.leader_address and self.leader_address != self.address:
            return (
                f"controller {self.address} is a standby; the leader is {self.leader_address}: "
                "send requests there (the SDK and agents follow this by themselves)"
            )
        return (
            f"controller {self.address} is not the leader yet (no leader is elected, or it is "
            "still restoring the journal); retry in a moment"
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        handler = await continuation(details)
        if handler is None or not method.startswith(_GUARDED):
            return handler
        term = self.term
        if term is None:
            return _refusing(handler, self._refuse_standby_call)
        if method == _SUBMIT and term.journal is not None:
            return _replace(handler, unary_unary=self._submit(handler.unary_unary, term))
        if method == _WATCH:
            return _replace(handler, unary_stream=self._watch(handler.unary_stream, term))
        if method == _SESSION:
            return _replace(handler, stream_stream=self._session(handler.stream_stream, term))
        return handler

    # ------------------------------------------------------------------ SubmitJob

    def _submit(self, inner: Any, term: Term) -> Any:
        hooks = _TermHooks(self, term)

        async def submit(
            request: client_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
        ) -> client_pb2.SubmitJobResponse:
            try:
                hooks.check(request)
                response: client_pb2.SubmitJobResponse = await inner(request, context)
                await hooks.acknowledged(request, response)
            except Refused as e:
                if e.code == grpc.StatusCode.UNAVAILABLE:  # the term ended: name the leader
                    await _refuse(context, e.message, self.leader_address)
                else:
                    await context.abort(e.code, e.message)
                raise AssertionError("unreachable") from None
            return response

        return submit

    # ------------------------------------------------------------------ Session

    def _session(self, inner: Any, term: Term) -> Any:
        gate = self
        hooks = _TermHooks(self, term)

        async def session(requests: Any, context: grpc.aio.ServicerContext) -> None:
            await context.send_initial_metadata(((EPOCH_METADATA, str(term.epoch)),))
            # The session's submits are journaled before they are acknowledged, its finished
            # calls count as delivered: the JobService reads these hooks for this call.
            token = session_hooks.set(hooks)
            # The stream outlives requests: it ends with the term even when no call of it is
            # watching a job (whose wake-up would end it), so that no later submit on it
            # reaches a controller that no longer leads.
            serving = asyncio.ensure_future(inner(requests, context))
            ended = asyncio.ensure_future(term.ended.wait())
            try:
                await asyncio.wait((serving, ended), return_when=asyncio.FIRST_COMPLETED)
                if serving.done():
                    with contextlib.suppress(SchedulerReplaced):
                        serving.result()
                        return
            finally:
                for task in (serving, ended):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await serving
                session_hooks.reset(token)
            await gate._refuse_ended_watch(context)

        return session

    # ------------------------------------------------------------------ WatchJob

    def _watch(self, inner: Any, term: Term) -> Any:
        gate = self

        async def watch(
            request: client_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            metadata = dict(context.invocation_metadata() or ())
            seen_epoch = metadata.get(EPOCH_METADATA, "")
            if request.after_seq and seen_epoch != str(term.epoch):
                # The cursor counts another leader's log (or an unknown one): replay ours.
                request.after_seq = 0
            await context.send_initial_metadata(((EPOCH_METADATA, str(term.epoch)),))
            events = inner(request, context)
            try:
                # The term's end replaces the shell's scheduler, which wakes the inner watch:
                # it raises SchedulerReplaced at once, and this gate alone ends the call (an
                # abort raced against the inner one's was sent twice: "Abort already called!").
                while not term.ended.is_set():
                    try:
                        batch = await anext(events)
                    except StopAsyncIteration:
                        term.on_delivered(request.job_id)
                        return
                    except SchedulerReplaced:
                        break
                    yield batch
            finally:
                with contextlib.suppress(BaseException):
                    await events.aclose()
            await gate._refuse_ended_watch(context)

        return watch

    async def _refuse_standby_call(self, context: grpc.aio.ServicerContext) -> None:
        """End a call this controller cannot serve. When no leader is known yet (a controller
        that just started, or an election under way), wait up to ``SUCCESSOR_WAIT_S`` for one
        so that the refusal can name it and the caller goes there at once instead of retrying
        its address list."""
        if not self.leader_address:
            await self._wait_for_a_leader()
        await _refuse(context, self.refusal(), self.leader_address)

    async def _wait_for_a_leader(self) -> None:
        self._successor_waits += 1
        try:
            await self._leader_or_timeout()
        finally:
            self._successor_waits -= 1

    async def _refuse_ended_watch(self, context: grpc.aio.ServicerContext) -> None:
        """End a watch whose term ended: UNAVAILABLE naming the next leader when it is known
        within ``SUCCESSOR_WAIT_S``, as a standby's refusal does."""
        await self._wait_for_a_leader()
        leader = self.leader_address
        if leader:
            message = (
                f"controller {self.address} lost the leadership; the leader is now {leader}: "
                "re-attach there (the SDK does, resuming without duplicates)"
            )
        else:
            message = (
                f"controller {self.address} lost the leadership and no new leader is known yet; "
                "re-attach in a moment (the SDK does, resuming without duplicates)"
            )
        await _refuse(context, message, leader)


@dataclass
class _TermHooks:
    """What a submit owes the term's journal (SubmitJob and a Session's submits alike): a job
    too large to journal is refused before it is accepted; an accepted one is acknowledged once
    journaled (a resubmitted one once its first submit is). See ``service.session``."""

    gate: LeaderGate
    term: Term

    def check(self, request: client_pb2.SubmitJobRequest) -> None:
        if self.term.ended.is_set():
            raise Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"controller {self.gate.address} stopped leading before this job was accepted; "
                "resubmit it with the same job id to the leader (the SDK does)",
            )
        journal = self.term.journal
        if journal is None:
            return
        try:
            journal.check_job_size(max(len(request.job_id), 32), request.ByteSize())
        except JournalRecordTooLarge as e:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None

    async def acknowledged(
        self, request: client_pb2.SubmitJobRequest, response: client_pb2.SubmitJobResponse
    ) -> None:
        journal = self.term.journal
        if journal is None:
            return
        try:
            if response.duplicate:
                await journal.wait_job(response.job_id)
            else:
                request.job_id = response.job_id
                await journal.append_job(response.job_id, request.SerializeToString())
        except JournalClosed as e:
            raise Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"job {response.job_id!r} was not acknowledged: {e}; resubmit it with the "
                "same job id to the leader (the SDK does)",
            ) from None

    def delivered(self, job_id: str) -> None:
        self.term.on_delivered(job_id)


def _replace(handler: grpc.RpcMethodHandler, **behaviour: Any) -> grpc.RpcMethodHandler:
    if "stream_stream" in behaviour:
        return grpc.stream_stream_rpc_method_handler(
            behaviour["stream_stream"],
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if "unary_unary" in behaviour:
        return grpc.unary_unary_rpc_method_handler(
            behaviour["unary_unary"],
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_stream_rpc_method_handler(
        behaviour["unary_stream"],
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def _refuse(context: grpc.aio.ServicerContext, message: str, leader: str) -> None:
    """End the call with UNAVAILABLE and ``message``; with ``deerflow-leader: <leader>`` in the
    trailing metadata when a leader is known (the SDK and the agents go there at once)."""
    if leader:
        context.set_trailing_metadata(((LEADER_METADATA, leader),))
    await context.abort(grpc.StatusCode.UNAVAILABLE, message)


def _refusing(
    handler: grpc.RpcMethodHandler,
    refuse_call: Callable[[grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` whose every call ``refuse_call`` ends."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse_call(context)

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **kw)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    return grpc.stream_stream_rpc_method_handler(refuse, **kw)
