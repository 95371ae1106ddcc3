"""Transport security for every endpoint: TLS and mutual TLS configured by file paths, reloaded
when the files change (see docs/SECURITY.md, "TLS and mutual TLS").

    from deerflow_common.tls import TlsFiles, server_credentials, aio_channel

    server.add_secure_port(addr, server_credentials(TlsFiles(cert, key, client_ca)))
    channel = aio_channel(addr, TlsFiles(cert=None, key=None, ca=ca))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Configuration and checks
from ._files import (
    CA_ENV,
    CERT_ENV,
    CLIENT_FLAGS,
    ENV_FLAGS,
    KEY_ENV,
    SERVER_FLAGS,
    FileWatch,
    Flags,
    TlsError,
    TlsFiles,
    load,
)

if TYPE_CHECKING:
    # Certificates for a test cluster (`deerflow certs`)
    from ._certs import DEFAULT_DAYS, DEFAULT_HOSTS, CertificateDir, make_certificates

    # gRPC
    from ._grpc import (
        AGENT_URI_PREFIX,
        PeerIdentity,
        ServerCertificates,
        aio_channel,
        certificate_identity,
        channel_credentials,
        peer_identity,
        server_credentials,
    )

    # HTTP (aiohttp)
    from ._http import ReloadingServerContext, client_ssl_context, server_ssl_context

# Loaded on first use: making certificates needs the cryptography package, and the gRPC side
# gRPC itself; a command line checks its TLS flags (``_files``) before it needs either (the
# controller spawns its local agents in between).
_LAZY = {
    **dict.fromkeys(
        ("DEFAULT_DAYS", "DEFAULT_HOSTS", "CertificateDir", "make_certificates"), "_certs"
    ),
    **dict.fromkeys(
        (
            "AGENT_URI_PREFIX",
            "PeerIdentity",
            "ServerCertificates",
            "aio_channel",
            "certificate_identity",
            "channel_credentials",
            "peer_identity",
            "server_credentials",
        ),
        "_grpc",
    ),
    **dict.fromkeys(
        ("ReloadingServerContext", "client_ssl_context", "server_ssl_context"), "_http"
    ),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGENT_URI_PREFIX",
    "CA_ENV",
    "CERT_ENV",
    "CLIENT_FLAGS",
    "DEFAULT_DAYS",
    "DEFAULT_HOSTS",
    "ENV_FLAGS",
    "KEY_ENV",
    "SERVER_FLAGS",
    "CertificateDir",
    "FileWatch",
    "Flags",
    "PeerIdentity",
    "ReloadingServerContext",
    "ServerCertificates",
    "TlsError",
    "TlsFiles",
    "aio_channel",
    "certificate_identity",
    "channel_credentials",
    "client_ssl_context",
    "load",
    "make_certificates",
    "peer_identity",
    "server_credentials",
    "server_ssl_context",
]
