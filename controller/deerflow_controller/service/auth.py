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

Streams are admitted when they open; the interceptor keeps them in ``service.open_streams`` and,
when the credentials change (the file reloaded), ends those whose credential is gone or now
admits another tenant or role: UNAUTHENTICATED (PERMISSION_DENIED when the role no longer allows
the call) with a sentence saying so. Streams of unchanged credentials go on.

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
from deerflow_controller.service.open_streams import OpenStream, OpenStreams, Verdict

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
        self.streams = OpenStreams()
        credentials.on_change(self._credentials_changed)

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
                self._wrap(handler.unary_unary, method, token, streaming=False), **kw
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, method, token, streaming=True), **kw
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(handler.stream_unary, method, token, streaming=False), **kw
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap(handler.stream_stream, method, token, streaming=True), **kw
        )

    def _wrap(self, inner: Any, method: str, token: str, *, streaming: bool) -> Any:
        """``inner`` run as the caller's principal, after its credentials were checked; an
        async generator stays one. A call that streams its responses is registered in
        :attr:`streams` while it runs, so that revoking its credential ends it."""
        if inspect.isasyncgenfunction(inner):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                who, identity = await self._admit(method, token, context)
                # Each call runs in a task of its own (its own context): set, never reset, as
                # a generator may be finalised from another context.
                _principal.set(who)
                held = self.streams.open(method, token, identity, who, context)
                try:
                    async for item in inner(request, context):
                        yield item
                finally:
                    self.streams.close(held)

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            who, identity = await self._admit(method, token, context)
            reset = _principal.set(who)
            held = self.streams.open(method, token, identity, who, context) if streaming else None
            try:
                return await inner(request, context)
            finally:
                if held is not None:
                    self.streams.close(held)
                _principal.reset(reset)

        return call

    async def _admit(
        self, method: str, token: str, context: grpc.aio.ServicerContext
    ) -> tuple[Principal, str | None]:
        """The principal the call runs as, and the certificate identity it had."""
        identity = self._identity(method, context)
        try:
            return self.admission(method, token, identity, self.credentials.current()), identity
        except _Refusal as r:
            self._note(r, method, context)
            await context.abort(r.code, r.message)
            raise AssertionError("unreachable") from None

    def check(self, method: str, token: str, context: grpc.aio.ServicerContext | None) -> Principal:
        """The principal ``method`` runs as, or :class:`_Refusal`."""
        identity = self._identity(method, context)
        return self.admission(method, token, identity, self.credentials.current())

    def _identity(self, method: str, context: grpc.aio.ServicerContext | None) -> str | None:
        """The verified certificate identity of an agent's call (None: none, or not an agent's
        call, or no mutual TLS)."""
        if not method.startswith(_AGENTS) or self.peer_identity is None or context is None:
            return None
        return self.peer_identity(context)

    def admission(
        self, method: str, token: str, identity: str | None, creds: CredentialSet
    ) -> Principal:
        """The principal ``method`` runs as under ``creds``, or :class:`_Refusal`."""
        if method.startswith(_AGENTS):
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

    def _credentials_changed(self, creds: CredentialSet) -> None:
        """The credentials changed: end the open streams they no longer admit as before."""
        if self.streams.by_principal:
            ended = self.streams.revoke(lambda stream: self.verdict(stream, creds))
            if ended:
                log.warning(
                    "the credentials changed: ended %d open streams whose credential was revoked "
                    "or now has another tenant or role",
                    ended,
                )

    def verdict(self, stream: OpenStream, creds: CredentialSet) -> Verdict:
        """How ``stream`` ends under ``creds``: None while its credential admits it as the
        same tenant and role."""
        was = stream.principal
        try:
            now = self.admission(stream.method, stream.token, stream.identity, creds)
        except _Refusal as r:
            return r.code, _revoked(stream, creds)
        if (now.role, now.tenant) == (was.role, was.tenant):
            return None
        return grpc.StatusCode.UNAUTHENTICATED, _revoked(stream, creds)

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


def _revoked(stream: OpenStream, creds: CredentialSet) -> str:
    """The sentence ending a stream whose credential was revoked or changed."""
    was = stream.principal
    if was.role is Role.AGENT:
        if stream.identity and not stream.token:
            return (
                f"this agent's certificate identity (entry {was.name!r}) was removed from the "
                "controller's auth file while its stream was open; list it again, or give the "
                "agent a join token (`deerflow token new --agent`)"
            )
        return (
            f"this agent's join token (entry {was.name!r}) was revoked in the controller's auth "
            "file while its stream was open; give the agent a current one (`deerflow token new "
            "--agent`, then --join-token-file or DEERFLOW_JOIN_TOKEN)"
        )
    now = creds.client_by_token(stream.token)
    if now is None:
        change = "revoked"
    else:
        tenant = f"tenant {now.tenant!r}, " if now.tenant else ""
        change = f"changed (now {tenant}role {now.role.value!r})"
    return (
        f"token {was.name!r} was {change} in the controller's auth file while this stream was "
        "open; call again with a current token (the operator makes one with `deerflow token new`)"
    )
