"""Authentication and roles on every gRPC call: :class:`AuthInterceptor`, a server interceptor.

With ``--auth-file`` (``service.credentials``) every call is checked before a servicer runs:

- ``JobService``: ``authorization: Bearer <token>`` metadata with a client token of role
  ``user`` or ``admin``; the caller's :class:`Principal` (its tenant) is then available to the
  servicer through :func:`principal` (a context variable set for the call);
- ``AgentService`` (the agent's stream and ``FetchInput``): ``authorization: Bearer <join
  token>`` metadata, or, when mutual TLS is on, a verified client-certificate identity listed
  in an ``[[agent]]`` entry's ``identity`` (read by the ``peer_identity`` hook, given by the TLS
  set-up);
- ``AdminService``: ``GetStats``, ``ListAgents``, ``ListJobs`` and ``GetJob`` for any client
  token (a user's GetStats, ListJobs and GetJob see its own tenant's jobs only), anything else
  (``DrainAgent``, and whatever is added later) only for ``admin``;
- health checking and reflection stay open (load balancers, grpcurl).

Missing or wrong credentials: UNAUTHENTICATED with one sentence; a valid token without the role:
PERMISSION_DENIED. Tokens are never logged: refusals name the peer, the method and why, at most
one WARNING per peer host a minute (DEBUG in between).

Without ``--auth-file`` the interceptor is not installed and :func:`principal` is None: the
servicers then apply no tenant rules (embedded mode on loopback, or ``--insecure``).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from deerflow_controller.service.credentials import Credentials, CredentialSet, Principal, Role
from deerflow_controller.service.malformed import MAX_PEERS_TRACKED, QUIET_S, _peer_host

log = logging.getLogger(__name__)

PeerIdentity = Callable[[grpc.aio.ServicerContext], str | None]
"""The TLS set-up's hook: the verified client certificate's identity of a call, None without
one (or without mutual TLS)."""

_JOBS = "/deerflow.v1.JobService/"
_AGENTS = "/deerflow.v1.AgentService/"
_ADMIN = "/deerflow.v1.AdminService/"
_ADMIN_READS = frozenset(
    {_ADMIN + "GetStats", _ADMIN + "ListAgents", _ADMIN + "ListJobs", _ADMIN + "GetJob"}
)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "deerflow_principal", default=None
)


def principal() -> Principal | None:
    """Who the current call is from; None when authentication is off."""
    return _principal.get()


def bearer(metadata: Any) -> str:
    """The token of an ``authorization: Bearer <token>`` entry ("" without one)."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value if isinstance(value, str) else value.decode(errors="replace")
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


class _Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, why: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.why = why


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks each call's credentials (see the module docstring)."""

    def __init__(
        self,
        credentials: Credentials,
        peer_identity: PeerIdentity | None = None,
        quiet_s: float = QUIET_S,
    ) -> None:
        self.credentials = credentials
        self.peer_identity = peer_identity
        self.quiet_s = quiet_s
        self._warned_at: OrderedDict[str, float] = OrderedDict()
        self.refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith((_JOBS, _AGENTS, _ADMIN)):
            return handler
        token = bearer(details.invocation_metadata)
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method, token), **kw
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, method, token), **kw
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(handler.stream_unary, method, token), **kw
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap(handler.stream_stream, method, token), **kw
        )

    def _wrap(self, inner: Any, method: str, token: str) -> Any:
        """``inner`` run as the caller's principal, after its credentials were checked; an
        async generator stays one."""
        if inspect.isasyncgenfunction(inner):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                # Each call runs in a task of its own (its own context): set, never reset, as
                # a generator may be finalised from another context.
                _principal.set(await self._admit(method, token, context))
                async for item in inner(request, context):
                    yield item

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            who = await self._admit(method, token, context)
            reset = _principal.set(who)
            try:
                return await inner(request, context)
            finally:
                _principal.reset(reset)

        return call

    async def _admit(self, method: str, token: str, context: grpc.aio.ServicerContext) -> Principal:
        try:
            return self.check(method, token, context)
        except _Refusal as r:
            self._note(r, method, context)
            await context.abort(r.code, r.message)
            raise AssertionError("unreachable") from None

    def check(self, method: str, token: str, context: grpc.aio.ServicerContext | None) -> Principal:
        """The principal ``method`` runs as, or :class:`_Refusal`."""
        creds: CredentialSet = self.credentials.current()
        if method.startswith(_AGENTS):
            identity = (
                self.peer_identity(context)
                if self.peer_identity is not None and context is not None
                else None
            )
            if identity:
                found = creds.agent_by_identity(identity)
                if found is not None:
                    return found
            found = creds.agent_by_token(token)
            if found is not None:
                return found
            if token:
                raise _Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the join token this agent sent is not valid here (unknown or revoked); give "
                    "the agent a current one (--join-token-file or DEERFLOW_JOIN_TOKEN)",
                    "a join token that is not valid",
                )
            raise _Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "this controller admits only agents with a join token; give the agent one "
                "(--join-token-file or DEERFLOW_JOIN_TOKEN)"
                + (
                    " or a client certificate listed in the auth file" if self.peer_identity else ""
                ),
                "no join token",
            )
        found = creds.client_by_token(token)
        if found is None:
            if token:
                raise _Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the token sent is not valid here (unknown or revoked); ask the operator for "
                    "a current one",
                    "a token that is not valid",
                )
            raise _Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "this controller needs a token: send 'authorization: Bearer <token>' metadata "
                "(the SDK's token=, or --token / DEERFLOW_TOKEN for the CLI)",
                "no token",
            )
        if found.role is Role.METRICS:
            raise _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {found.name!r} may only read /metrics; use a user or admin token",
                f"metrics token {found.name!r}",
            )
        if method.startswith(_ADMIN) and method not in _ADMIN_READS and not found.admin:
            name = method.rsplit("/", 1)[-1]
            raise _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name} needs an admin token; token {found.name!r} of tenant "
                f"{found.tenant!r} is a user's",
                f"user token {found.name!r}",
            )
        return found

    def _note(self, refusal: _Refusal, method: str, context: grpc.aio.ServicerContext) -> None:
        """Count and (rate-limited) log a refusal; never the token."""
        self.refused += 1
        peer = _peer_host(str(context.peer()))
        now = time.monotonic()
        last = self._warned_at.get(peer)
        level = logging.DEBUG
        if last is None or now - last >= self.quiet_s:
            self._warned_at[peer] = now
            self._warned_at.move_to_end(peer)
            while len(self._warned_at) > MAX_PEERS_TRACKED:
                self._warned_at.popitem(last=False)
            level = logging.WARNING
        log.log(
            level,
            "refused %s on %s from %s (%s); at most one such line per %g s per peer",
            refusal.why,
            method,
            peer,
            refusal.code.name,
            self.quiet_s,
        )
