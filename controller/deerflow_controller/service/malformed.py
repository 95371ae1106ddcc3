"""Requests whose bytes are not the message they claim to be: INVALID_ARGUMENT, not a traceback.

gRPC parses a request (the method's ``request_deserializer``, protobuf's ``FromString``) before
the servicer runs, and a parse error there becomes UNKNOWN "Unexpected DecodeError" plus an
ERROR traceback in the log for every such message: one client sending garbage in a loop wrote
6,000 tracebacks (5 MB of log) in one run. :class:`MalformedRequestGuard` is a server
interceptor that wraps each method's deserializer so that a parse error yields a
:class:`Malformed` marker instead of raising, and wraps the method's behaviour so that the
marker ends the call with INVALID_ARGUMENT and one sentence. Each peer host costs at most one
WARNING line per ``QUIET_S`` (DEBUG in between), whatever it sends.

A unary request that is malformed is refused before the servicer sees it. On a request stream,
the servicer sees the messages before the malformed one, then the end of the stream; the call
then ends INVALID_ARGUMENT with the sentence (unless the servicer ends it otherwise first).

Every refusal, the servicers' too, passes through here as the ``AbortError`` that
``context.abort`` raises, and gRPC keeps that exception on the call's state: its traceback holds
the frames that hold the call's state and its request, a reference cycle that only the cyclic
collector frees, which the daemons run rarely (``deerflow_common.gc_tuning``). Each refused
request then stayed in memory: refusing 15 requests of 2.6 MB (200,000 labels) grew the
controller by 500 MB (issue #17 finding 5, found by the fuzz suite). The guard drops the
traceback once gRPC has caught the exception (:func:`_release_when_caught`), so a refused
request is freed as soon as its call ends.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

QUIET_S = 60.0
"""After a WARNING about a peer host's malformed messages, the next one comes no sooner."""

MAX_PEERS_TRACKED = 4096
"""Peer hosts whose last WARNING time is kept (oldest forgotten first): bounds the table when
malformed messages come from many addresses."""


MAX_PARSERS_CACHED = 256
"""Guarded parsers kept for reuse: one per method served (a few dozen)."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """What the guarded deserializer returns for bytes that do not parse."""

    type_name: str
    reason: str


def _deserializer(parse: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as e:  # anything protobuf raises on bytes is the sender's doing
            return Malformed(type_name, str(e).split("\n", 1)[0][:120])

    return parse_or_mark


def _drop_traceback(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of the exceptions it was raised from or during (a
    servicer that aborts inside ``except JobRejected`` chains that one, with its frames)."""
    seen: set[int] = set()
    chained: BaseException | None = exc
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        chained.__traceback__ = None
        following = chained.__cause__ or chained.__context__
        chained.__cause__ = chained.__context__ = None
        chained = following


def _release_when_caught(exc: BaseException) -> None:
    """Drop ``exc``'s tracebacks on the next loop turn, when gRPC has caught it (it propagates
    synchronously to gRPC's handler): the frames they hold, and the request those hold, are
    then freed by reference counting, not left in a cycle for the collector."""
    asyncio.get_running_loop().call_soon(_drop_traceback, exc)


def _type_name(parse: Callable[[bytes], Any]) -> str:
    owner = getattr(parse, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "name", "request"))


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` -> ``ipv4:127.0.0.1`` (a client reconnecting gets a new port)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class MalformedRequestGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Turns unparseable requests into INVALID_ARGUMENT with one sentence, and logs them at a
    rate limit per peer host (see the module docstring)."""

    def __init__(self, quiet_s: float = QUIET_S) -> None:
        self.quiet_s = quiet_s
        self._warned_at: OrderedDict[str, float] = OrderedDict()
        self._parsers: dict[Any, Callable[[bytes], Any]] = {}
        self.refused = 0
        """Malformed requests refused so far (all peers)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        parse = getattr(handler, "request_deserializer", None)
        if handler is None or parse is None:
            return handler
        guarded = self._parsers.get(parse)
        if guarded is None:
            guarded = _deserializer(parse, _type_name(parse))
            # One per method's parser (the generated FromString, fixed at registration); the
            # bound only matters if some handler made a new parser per call.
            if len(self._parsers) < MAX_PARSERS_CACHED:
                self._parsers[parse] = guarded
        method: str = details.method
        kw = {"request_deserializer": guarded, "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), **kw
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary(handler.unary_stream, method), **kw
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._streaming(handler.stream_unary, method), **kw
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, method), **kw
        )

    def _unary(self, inner: Any, method: str) -> Any:
        """``inner`` behind a check of its one request; an async generator stays one (gRPC
        tells response streams written by yield from those written by ``context.write``)."""
        if inspect.isasyncgenfunction(inner):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    if isinstance(request, Malformed):
                        await self._refuse(request, method, context)
                    async for item in inner(request, context):
                        yield item
                except grpc.aio.AbortError as e:
                    _release_when_caught(e)
                    raise

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if isinstance(request, Malformed):
                    await self._refuse(request, method, context)
                return await inner(request, context)
            except grpc.aio.AbortError as e:
                _release_when_caught(e)
                raise

        return call

    def _streaming(self, inner: Any, method: str) -> Any:
        """``inner`` reading a request stream that ends at the first malformed message, after
        which the call's status is INVALID_ARGUMENT with the sentence."""

        def checked(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async def gen() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, Malformed):
                        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                        context.set_details(self._note(request, method, context))
                        return
                    yield request

            return gen()

        if inspect.isasyncgenfunction(inner):

            async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for item in inner(checked(requests, context), context):
                        yield item
                except grpc.aio.AbortError as e:
                    _release_when_caught(e)
                    raise

            return stream

        async def call(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(checked(requests, context), context)
            except grpc.aio.AbortError as e:
                _release_when_caught(e)
                raise

        return call

    async def _refuse(
        self, request: Malformed, method: str, context: grpc.aio.ServicerContext
    ) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, self._note(request, method, context))

    def _note(self, request: Malformed, method: str, context: grpc.aio.ServicerContext) -> str:
        """Count and (rate-limited) log one malformed request; return the caller's sentence."""
        self.refused += 1
        peer = _peer_host(str(context.peer()))
        now = time.monotonic()
        last = self._warned_at.get(peer)
        if last is None or now - last >= self.quiet_s:
            self._warned_at[peer] = now
            self._warned_at.move_to_end(peer)
            while len(self._warned_at) > MAX_PEERS_TRACKED:
                self._warned_at.popitem(last=False)
            level = logging.WARNING
        else:
            level = logging.DEBUG
        log.log(
            level,
            "refused a malformed %s from %s on %s (%s); at most one such line per %g s per peer",
            request.type_name,
            peer,
            method,
            request.reason,
            self.quiet_s,
        )
        return (
            f"the request is not a valid {request.type_name} message (its protobuf bytes do "
            "not parse); send it with a client built from deerflow's .proto files"
        )
