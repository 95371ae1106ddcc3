"""Which files a TLS endpoint uses (:class:`TlsFiles`), the start-up checks that name the flag
of a bad file, and the change detection that reloads them (:class:`FileWatch`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # parsing certificates loads cryptography: only when TLS files are given
    from cryptography import x509

CA_ENV = "DEERFLOW_TLS_CA"
CERT_ENV = "DEERFLOW_TLS_CERT"
KEY_ENV = "DEERFLOW_TLS_KEY"


class TlsError(ValueError):
    """A TLS file cannot be used; the message is one sentence naming the file and its flag."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of one end of a TLS connection; every path optional.

    On a server (the controller, an agent's metrics port): ``cert``/``key`` are its identity and
    ``ca``, when given, is the CA that must have signed every client's certificate (mutual TLS:
    a client without one is refused at the handshake). On a client (an agent, the SDK, the CLI):
    ``ca`` is the CA the server's certificate must chain to (None: the system's roots) and
    ``cert``/``key``, when given, its own identity for a server that requires one.

    Files are read when a connection needs them, not here: see :class:`FileWatch`."""

    cert: Path | None = None
    """Certificate chain: the leaf first, then any intermediates (``--tls-cert``)."""
    key: Path | None = None
    """Private key of ``cert`` (``--tls-key``); keep it 0600."""
    ca: Path | None = None
    """CA certificates to verify the other end with (``--tls-ca``, ``--tls-client-ca``)."""

    @classmethod
    def of(
        cls,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        ca: str | os.PathLike[str] | None = None,
    ) -> TlsFiles:
        """From optional strings or paths; empty strings count as not given."""
        return cls(*(Path(p) if p else None for p in (cert, key, ca)))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TlsFiles | None:
        """``$DEERFLOW_TLS_CA``, ``$DEERFLOW_TLS_CERT``, ``$DEERFLOW_TLS_KEY`` (a client's); None
        when none is set (plaintext). Checked now: raises :class:`TlsError` naming the variable
        of a missing, unreadable or mismatched file."""
        environ = os.environ if env is None else env
        files = cls.of(environ.get(CERT_ENV), environ.get(KEY_ENV), environ.get(CA_ENV))
        if not files.given:
            return None
        load(files, ENV_FLAGS)
        return files

    @property
    def given(self) -> bool:
        return any(p is not None for p in (self.cert, self.key, self.ca))

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.ca) if p is not None)


@dataclass(frozen=True, slots=True)
class Flags:
    """The names an error message gives each file (the flags or variables that set them)."""

    cert: str = "--tls-cert"
    key: str = "--tls-key"
    ca: str = "--tls-ca"


SERVER_FLAGS = Flags(ca="--tls-client-ca")
CLIENT_FLAGS = Flags()
ENV_FLAGS = Flags(CERT_ENV, KEY_ENV, CA_ENV)


@dataclass(frozen=True, slots=True)
class Pem:
    """The bytes of a :class:`TlsFiles` as read at one moment."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise TlsError(f"{flag} {path}: is a directory, not a PEM file") from None
    except OSError as e:
        raise TlsError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None


def _certificates(data: bytes, path: Path, flag: str) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsError(f"{flag} {path}: no PEM certificate in it")
    return certs


def load(files: TlsFiles, flags: Flags = CLIENT_FLAGS, *, server: bool = False) -> Pem:
    """Read and check ``files``: every file readable PEM, ``cert`` and ``key`` given together
    and matching (a server needs both). Raises :class:`TlsError` naming the flag."""
    if (files.cert is None) != (files.key is None):
        given, missing = (flags.cert, flags.key) if files.key is None else (flags.key, flags.cert)
        raise TlsError(f"{given} needs {missing} too (a certificate and its private key)")
    if server and files.cert is None:
        raise TlsError(f"{flags.ca} needs {flags.cert} and {flags.key} (the server's identity)")
    ca = None
    if files.ca is not None:
        ca = _read(files.ca, flags.ca)
        _certificates(ca, files.ca, flags.ca)
    if files.cert is None or files.key is None:
        return Pem(None, None, ca)
    cert, key = _read(files.cert, flags.cert), _read(files.key, flags.key)
    leaf = _certificates(cert, files.cert, flags.cert)[0]
    from cryptography.hazmat.primitives import serialization

    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"{flags.key} {files.key}: not an unencrypted PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if private.public_key().public_bytes(enc, pub) != leaf.public_key().public_bytes(enc, pub):
        raise TlsError(
            f"{flags.key} {files.key} is not the private key of {flags.cert} {files.cert}"
        )
    return Pem(cert, key, ca)


class FileWatch:
    """Tells whether any of some files changed since the last look, by their modification time
    (ns), size and inode: a rename over the file (the usual atomic replace) or a rewrite in
    place both count. A missing file counts as a state of its own. Costs one ``stat`` a file."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self.paths = paths
        self._seen = self._state()

    def _state(self) -> tuple[tuple[int, int, int] | None, ...]:
        out: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                st = path.stat()
            except OSError:
                out.append(None)
                continue
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def changed(self) -> bool:
        """True once per change: the new state becomes the one compared with next."""
        state = self._state()
        if state == self._seen:
            return False
        self._seen = state
        return True

    def forget(self) -> None:
        """Make the next :meth:`changed` true (after a change that could not be used yet, e.g.
        a new certificate whose key is not written yet: look again at the next connection)."""
        self._seen = ()
