"""TLS for gRPC: the controller's server credentials (reloaded when the files change), the
channel credentials of agents and clients, and the verified identity of a peer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ._files import CLIENT_FLAGS, SERVER_FLAGS, FileWatch, Flags, Pem, TlsError, TlsFiles, load

log = logging.getLogger(__name__)

AGENT_URI_PREFIX = "urn:deerflow:agent:"
"""An agent's certificate names its id as the URI SAN ``urn:deerflow:agent:<id>`` (``deerflow
certs --agent ID`` writes it; its common name is the id too)."""


def _server_configuration(pem: Pem) -> Any:
    assert pem.cert is not None and pem.key is not None
    return grpc.ssl_server_certificate_configuration([(pem.key, pem.cert)], pem.ca)


class ServerCertificates:
    """The certificate configuration a TLS gRPC server uses, re-read when its files change.

    gRPC asks :meth:`fetch` before every new connection's handshake (from one of its own
    threads). It answers None (keep the current configuration) unless a file's mtime, size or
    inode changed; then it reads and checks the files, and a set that does not check (a new
    certificate whose key is not written yet) is skipped with one WARNING and looked at again at
    the next connection. Connections already open keep the certificate they were made with."""

    def __init__(self, files: TlsFiles, flags: Flags = SERVER_FLAGS) -> None:
        self.files = files
        self.flags = flags
        self._watch = FileWatch(files.paths)
        self.initial = _server_configuration(load(files, flags, server=True))
        self.reloads = 0
        self._warned: str = ""

    def fetch(self) -> Any:
        if not self._watch.changed():
            return None
        try:
            configuration = _server_configuration(load(self.files, self.flags, server=True))
        except TlsError as e:
            self._watch.forget()
            if str(e) != self._warned:
                self._warned = str(e)
                log.warning("TLS files changed but cannot be used yet, keeping the old: %s", e)
            return None
        self._warned = ""
        self.reloads += 1
        log.info("TLS: reloaded %s", ", ".join(str(p) for p in self.files.paths))
        return configuration


def server_credentials(files: TlsFiles, flags: Flags = SERVER_FLAGS) -> grpc.ServerCredentials:
    """Credentials for ``server.add_secure_port``: ``files.cert``/``files.key`` are the server's
    identity; with ``files.ca`` every client must present a certificate that CA signed (mutual
    TLS), else client certificates are not asked for. Reloaded on change
    (:class:`ServerCertificates`). Raises :class:`TlsError` naming the flag of a bad file."""
    certificates = ServerCertificates(files, flags)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        certificates.fetch,
        require_client_authentication=files.ca is not None,
    )


def channel_credentials(files: TlsFiles, flags: Flags = CLIENT_FLAGS) -> grpc.ChannelCredentials:
    """Credentials for a client channel, read now: ``files.ca`` the roots the server must chain
    to (None: the system's), ``files.cert``/``files.key`` this client's identity for servers
    that require one. Make a new channel to pick up changed files (an agent does at each
    reconnect). Raises :class:`TlsError` naming the flag of a bad file."""
    pem = load(files, flags)
    return grpc.ssl_channel_credentials(pem.ca, pem.key, pem.cert)


def aio_channel(
    address: str,
    tls: TlsFiles | None,
    options: Sequence[tuple[str, Any]] = (),
    flags: Flags = CLIENT_FLAGS,
) -> grpc.aio.Channel:
    """An asyncio channel to ``address``: TLS with ``tls``, plaintext with None."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, channel_credentials(tls, flags), options=options)


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What the verified certificate of a gRPC peer says about it."""

    common_name: str
    """The subject's CN ('' when it has none)."""
    names: tuple[str, ...]
    """Its subject alternative names: DNS names, IP addresses and URIs, as gRPC lists them."""
    uris: tuple[str, ...] = ()
    """Its URI subject alternative names alone."""

    @property
    def agent_id(self) -> str | None:
        """The agent id the certificate was issued for (URI SAN ``urn:deerflow:agent:<id>``),
        None for a certificate that names no agent (a client's, the controller's)."""
        for name in self.uris:
            if name.startswith(AGENT_URI_PREFIX) and len(name) > len(AGENT_URI_PREFIX):
                return name[len(AGENT_URI_PREFIX) :]
        return None


def _text(values: Sequence[bytes] | None) -> tuple[str, ...]:
    return tuple(v.decode("utf-8", "replace") for v in values or ())


def peer_identity(
    context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any],
) -> PeerIdentity | None:
    """The identity in the client certificate of the call ``context`` serves, or None when the
    connection is plaintext or the client sent no certificate.

    A certificate is only ever here when it was verified: the controller asks for client
    certificates only under ``--tls-client-ca``, and then gRPC refuses the handshake of any
    certificate that CA did not sign. Map it to an agent with :attr:`PeerIdentity.agent_id`."""
    auth: dict[str, list[bytes]] = dict(context.auth_context())
    if _text(auth.get("transport_security_type")) != ("ssl",):
        return None
    cn = _text(auth.get("x509_common_name"))
    names = _text(auth.get("x509_subject_alternative_name"))
    if not cn and not names:
        return None
    return PeerIdentity(cn[0] if cn else "", names, _text(auth.get("peer_uri")))


def certificate_identity(
    context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any],
) -> str | None:
    """The one name the auth file's agent ``identity`` entries are matched with: the agent id
    of the URI SAN ``urn:deerflow:agent:<id>`` when the certificate has one, else its common
    name; None on plaintext or without a client certificate (see :func:`peer_identity`)."""
    identity = peer_identity(context)
    if identity is None:
        return None
    return identity.agent_id or identity.common_name or None
