"""``deerflow certs``: a local CA and the certificates of a test cluster, in one directory
(:class:`CertificateDir` names its files). For a real cluster use the organisation's CA; these
are for a lab, CI and the docs' walk-through."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._files import TlsFiles
from ._grpc import AGENT_URI_PREFIX

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 365
Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class CertificateDir:
    """The files ``deerflow certs DIR`` writes, and the :class:`TlsFiles` of each role."""

    path: Path

    @property
    def ca(self) -> Path:
        return self.path / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key: only ``deerflow certs`` needs it (to add agents later); keep
        it off the cluster's machines."""
        return self.path / "ca.key"

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.path / f"{name}.pem", self.path / f"{name}.key"

    def controller(self, *, mutual: bool = False) -> TlsFiles:
        """The controller's files: its certificate, and with ``mutual`` the CA clients need."""
        cert, key = self.pair("controller")
        return TlsFiles(cert, key, self.ca if mutual else None)

    def client(self) -> TlsFiles:
        """An SDK/CLI client's files: the CA and the client certificate."""
        cert, key = self.pair("client")
        return TlsFiles(cert, key, self.ca)

    def agent(self, agent_id: str) -> TlsFiles:
        """Agent ``agent_id``'s files: the CA and its own certificate."""
        cert, key = self.pair(f"agent-{agent_id}")
        return TlsFiles(cert, key, self.ca)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deerflow-parallel"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        if name.startswith("urn:"):
            out.append(x509.UniformResourceIdentifier(name))
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _write_key(path: Path, key: Key) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 before a byte is written, so the key is never readable by others.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class _Ca:
    cert: x509.Certificate
    key: Key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_ca(days: int, cn: str) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Ca(cert, key)


def _issue(
    ca: _Ca, cn: str, names: Iterable[str], usages: list[x509.ObjectIdentifier], days: int
) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    san = _san(names)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def _load_or_make_ca(out: CertificateDir, days: int, new_ca: bool) -> tuple[_Ca, bool]:
    if not new_ca and out.ca.exists() and out.ca_key.exists():
        cert = x509.load_pem_x509_certificate(out.ca.read_bytes())
        key = serialization.load_pem_private_key(out.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{out.ca_key}: not the EC key deerflow certs writes")
        return _Ca(cert, key), False
    ca = _new_ca(days, f"deerflow-parallel CA {_now():%Y-%m-%d %H:%M:%S}")
    _write_key(out.ca_key, ca.key)
    _write(out.ca, _pem(ca.cert))
    return ca, True


def make_certificates(
    directory: Path,
    *,
    hosts: Iterable[str] = (),
    agents: Iterable[str] = (),
    days: int = DEFAULT_DAYS,
    new_ca: bool = False,
) -> list[Path]:
    """Write into ``directory`` (created 0700): a CA (``ca.pem``, ``ca.key``; kept and reused
    when both exist, unless ``new_ca``), the controller's certificate (``controller.pem``: the
    leaf then the CA, valid for localhost, 127.0.0.1, ::1 and ``hosts``; usable as a server and,
    for embedded agents under mutual TLS, as a client), a client certificate
    (``client.pem``, CN ``deerflow-client``) and one per agent id (``agent-<id>.pem``, CN the id
    and URI SAN ``urn:deerflow:agent:<id>``; also valid for serving its metrics on loopback).
    Every key is 0600. Returns the files written."""
    out = CertificateDir(Path(directory))
    out.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, made = _load_or_make_ca(out, days, new_ca)
    written = [out.ca, out.ca_key] if made else []
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    roles: list[tuple[str, str, list[str], list[x509.ObjectIdentifier]]] = [
        ("controller", "deerflow-controller", [*DEFAULT_HOSTS, *hosts], [server, client]),
        ("client", "deerflow-client", [], [client]),
    ]
    for agent_id in agents:
        # Server use too: an agent with a certificate serves its --metrics-port over HTTPS.
        names = [f"{AGENT_URI_PREFIX}{agent_id}", *DEFAULT_HOSTS]
        roles.append((f"agent-{agent_id}", agent_id, names, [client, server]))
    for name, cn, names, usages in roles:
        cert, key = _issue(ca, cn, names, usages, days)
        cert_path, key_path = out.pair(name)
        _write_key(key_path, key)
        # The chain with the CA last: a peer given this file as its roots trusts the CA
        # (embedded agents do), and a server sends it whole.
        _write(cert_path, _pem(cert) + _pem(ca.cert))
        written += [cert_path, key_path]
    return written
