"""TLS for the HTTP side (aiohttp): a server :class:`ssl.SSLContext` whose certificate is
re-read when its files change, and a client context for tests and tools."""

from __future__ import annotations

import logging
import ssl
import tempfile
from pathlib import Path

from ._files import SERVER_FLAGS, FileWatch, Flags, TlsError, TlsFiles, load

log = logging.getLogger(__name__)


def _context(files: TlsFiles, flags: Flags) -> ssl.SSLContext:
    pem = load(files, flags, server=True)
    assert pem.cert is not None and pem.key is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files, not bytes: hand it what was just checked, so a file
    # replaced in between cannot pair a new certificate with an old key.
    with tempfile.TemporaryDirectory(prefix="deerflow-tls-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        key.touch(mode=0o600)
        key.write_bytes(pem.key)
        cert.write_bytes(pem.cert)
        ctx.load_cert_chain(cert, key)
    if pem.ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=pem.ca.decode("ascii", "replace"))
    return ctx


class ReloadingServerContext:
    """A server :class:`ssl.SSLContext` (:attr:`context`, give it to aiohttp's ``TCPSite``) that
    serves the current files: at the start of every handshake (its SNI callback, called with or
    without a server name) it looks whether the files changed, and if so hands the handshake a
    context built from the new files, and every later one too. A set of files that does not
    check is skipped with one WARNING and looked at again at the next handshake. Connections
    already open keep their certificate."""

    def __init__(self, files: TlsFiles, flags: Flags = SERVER_FLAGS) -> None:
        self.files = files
        self.flags = flags
        self._watch = FileWatch(files.paths)
        self.context = _context(files, flags)
        self.context.sni_callback = self._on_hello
        self._current = self.context
        self.reloads = 0
        self._warned = ""

    def _on_hello(
        self, conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        if self._watch.changed():
            try:
                self._current = _context(self.files, self.flags)
            except (TlsError, ssl.SSLError, OSError) as e:
                self._watch.forget()
                if str(e) != self._warned:
                    self._warned = str(e)
                    log.warning("TLS files changed but cannot be used yet, keeping the old: %s", e)
            else:
                self._warned = ""
                self.reloads += 1
                log.info("TLS (HTTP): reloaded %s", ", ".join(map(str, self.files.paths)))
        if self._current is not self.context:
            conn.context = self._current
        return None


def server_ssl_context(files: TlsFiles, flags: Flags = SERVER_FLAGS) -> ssl.SSLContext:
    """A server context for ``files`` that reloads them on change
    (:class:`ReloadingServerContext`); with ``files.ca`` clients must present a certificate
    that CA signed. Raises :class:`TlsError` naming the flag of a bad file."""
    return ReloadingServerContext(files, flags).context


def client_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context trusting ``files.ca`` (None: the system's roots), presenting
    ``files.cert``/``files.key`` when given."""
    ctx = ssl.create_default_context(cafile=str(files.ca) if files.ca else None)
    if files.cert is not None and files.key is not None:
        ctx.load_cert_chain(files.cert, files.key)
    return ctx
