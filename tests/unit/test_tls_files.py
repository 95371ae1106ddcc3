"""deerflow_common.tls without daemons: change detection (mtimes set with os.utime, no sleeps),
the start-up checks naming the flag, the reloading gRPC certificate fetcher, the certificates
`deerflow certs` makes, and the peer identity read from a call's auth context."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from deerflow_common.tls import (
    SERVER_FLAGS,
    CertificateDir,
    FileWatch,
    ServerCertificates,
    TlsError,
    TlsFiles,
    load,
    make_certificates,
    peer_identity,
)


def _bump(path: Path, seconds: int) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture(scope="module")
def two_cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateDir, CertificateDir]:
    one = CertificateDir(tmp_path_factory.mktemp("ca1"))
    two = CertificateDir(tmp_path_factory.mktemp("ca2"))
    make_certificates(one.path, agents=["a1"])
    make_certificates(two.path)
    return one, two


# ------------------------------------------------------------------------- FileWatch


def test_a_file_watch_sees_a_new_mtime_once(tmp_path: Path) -> None:
    f = tmp_path / "cert.pem"
    f.write_bytes(b"one")
    watch = FileWatch((f,))
    assert not watch.changed()
    _bump(f, 10)
    assert watch.changed()
    assert not watch.changed()


def test_a_file_watch_sees_a_rewrite_that_keeps_the_mtime(tmp_path: Path) -> None:
    f = tmp_path / "cert.pem"
    f.write_bytes(b"one")
    mtime = f.stat().st_mtime_ns
    watch = FileWatch((f,))
    f.write_bytes(b"longer")
    os.utime(f, ns=(mtime, mtime))
    assert watch.changed()


def test_a_file_watch_sees_a_rename_over_the_file(tmp_path: Path) -> None:
    f, new = tmp_path / "cert.pem", tmp_path / "new.pem"
    f.write_bytes(b"one")
    new.write_bytes(b"two")
    os.utime(new, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    watch = FileWatch((f,))
    os.replace(new, f)  # same size, same mtime, another inode
    assert watch.changed()


def test_a_file_watch_counts_a_missing_file_and_its_return(tmp_path: Path) -> None:
    f = tmp_path / "cert.pem"
    f.write_bytes(b"one")
    watch = FileWatch((f,))
    f.unlink()
    assert watch.changed()
    assert not watch.changed()
    f.write_bytes(b"one")
    assert watch.changed()


def test_forget_makes_the_next_look_a_change(tmp_path: Path) -> None:
    f = tmp_path / "cert.pem"
    f.write_bytes(b"one")
    watch = FileWatch((f,))
    watch.forget()
    assert watch.changed()
    assert not watch.changed()


# ------------------------------------------------------------------------- start-up checks


def test_a_missing_certificate_is_named_with_its_flag(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"^--tls-cert .*nope\.pem: no such file$"):
        load(TlsFiles(tmp_path / "nope.pem", tmp_path / "nope.key"), SERVER_FLAGS, server=True)


def test_a_key_of_another_certificate_is_refused_naming_both_flags(
    two_cas: tuple[CertificateDir, CertificateDir],
) -> None:
    one, two = two_cas
    cert, _ = one.pair("controller")
    _, other_key = two.pair("controller")
    with pytest.raises(TlsError, match=r"--tls-key .* is not the private key of --tls-cert"):
        load(TlsFiles(cert, other_key), SERVER_FLAGS, server=True)


def test_a_file_that_is_not_pem_is_refused(tmp_path: Path, two_cas: Any) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    one: CertificateDir = two_cas[0]
    with pytest.raises(TlsError, match=r"--tls-client-ca .*no PEM certificate"):
        load(TlsFiles(*one.pair("controller"), junk), SERVER_FLAGS, server=True)
    with pytest.raises(TlsError, match=r"--tls-key .*not an unencrypted PEM private key"):
        load(TlsFiles(one.pair("controller")[0], junk), SERVER_FLAGS, server=True)


def test_an_unreadable_key_is_refused(tmp_path: Path, two_cas: Any) -> None:
    one: CertificateDir = two_cas[0]
    with pytest.raises(TlsError, match=r"--tls-key .*is a directory"):
        load(TlsFiles(one.pair("controller")[0], tmp_path), SERVER_FLAGS, server=True)


def test_a_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(TlsError, match=r"^--tls-cert needs --tls-key too"):
        load(TlsFiles(cert=Path("c.pem")))
    with pytest.raises(TlsError, match=r"^--tls-client-ca needs --tls-cert and --tls-key"):
        load(TlsFiles(ca=Path("ca.pem")), SERVER_FLAGS, server=True)


def test_the_environment_names_the_client_files(
    two_cas: tuple[CertificateDir, CertificateDir], tmp_path: Path
) -> None:
    ca = two_cas[0].ca
    assert TlsFiles.from_env({}) is None
    files = TlsFiles.from_env({"DEERFLOW_TLS_CA": str(ca), "DEERFLOW_TLS_CERT": ""})
    assert files == TlsFiles(ca=ca)
    with pytest.raises(TlsError, match=r"^DEERFLOW_TLS_KEY needs DEERFLOW_TLS_CERT too"):
        TlsFiles.from_env({"DEERFLOW_TLS_KEY": str(ca)})
    with pytest.raises(TlsError, match=r"^DEERFLOW_TLS_CA .*: no such file$"):
        TlsFiles.from_env({"DEERFLOW_TLS_CA": str(tmp_path / "none.pem")})


# ------------------------------------------------------------------------- reload (gRPC)


def _server_files(tmp_path: Path, source: CertificateDir) -> TlsFiles:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(source.pair("controller")[0], cert)
    shutil.copy(source.pair("controller")[1], key)
    return TlsFiles(cert, key)


def test_the_grpc_fetcher_answers_none_until_the_files_change(
    tmp_path: Path, two_cas: tuple[CertificateDir, CertificateDir]
) -> None:
    one, two = two_cas
    files = _server_files(tmp_path, one)
    certificates = ServerCertificates(files)
    assert certificates.fetch() is None
    assert certificates.fetch() is None
    assert files.cert is not None and files.key is not None
    shutil.copy(two.pair("controller")[0], files.cert)
    shutil.copy(two.pair("controller")[1], files.key)
    _bump(files.cert, 10)
    assert certificates.fetch() is not None
    assert certificates.reloads == 1
    assert certificates.fetch() is None


def test_a_certificate_whose_key_is_not_written_yet_keeps_the_old_one_until_it_is(
    tmp_path: Path,
    two_cas: tuple[CertificateDir, CertificateDir],
    caplog: pytest.LogCaptureFixture,
) -> None:
    one, two = two_cas
    files = _server_files(tmp_path, one)
    certificates = ServerCertificates(files)
    assert files.cert is not None and files.key is not None
    shutil.copy(two.pair("controller")[0], files.cert)
    _bump(files.cert, 10)
    with caplog.at_level(logging.WARNING):
        assert certificates.fetch() is None
        assert certificates.fetch() is None  # looked at again, warned once
    warnings = [r for r in caplog.records if "cannot be used yet" in r.getMessage()]
    assert len(warnings) == 1 and "is not the private key" in warnings[0].getMessage()
    shutil.copy(two.pair("controller")[1], files.key)
    assert certificates.fetch() is not None
    assert certificates.reloads == 1


# ------------------------------------------------------------------------- deerflow certs


def test_deerflow_certs_makes_keys_only_the_owner_can_read(tmp_path: Path) -> None:
    written = make_certificates(
        tmp_path / "certs", hosts=["ctl.example", "10.1.2.3"], agents=["a1"]
    )
    keys = [p for p in written if p.suffix == ".key"]
    assert len(keys) == 4  # ca, controller, client, agent-a1
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o700


def test_the_controller_certificate_names_loopback_and_the_given_hosts(tmp_path: Path) -> None:
    make_certificates(tmp_path, hosts=["ctl.example", "10.1.2.3"])
    cert = x509.load_pem_x509_certificates((tmp_path / "controller.pem").read_bytes())
    san = cert[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "ctl.example"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "::1",
        "10.1.2.3",
    }
    assert cert[1].subject == cert[0].issuer  # the CA follows the leaf in the file


def test_an_agent_certificate_carries_its_id(tmp_path: Path) -> None:
    make_certificates(tmp_path, agents=["gpu-7"])
    cert = x509.load_pem_x509_certificate((tmp_path / "agent-gpu-7.pem").read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert cn == "gpu-7"
    assert "urn:deerflow:agent:gpu-7" in san.get_values_for_type(x509.UniformResourceIdentifier)


def test_running_deerflow_certs_again_keeps_the_ca_unless_told(tmp_path: Path) -> None:
    make_certificates(tmp_path)
    ca = (tmp_path / "ca.pem").read_bytes()
    written = make_certificates(tmp_path, agents=["late"])
    assert (tmp_path / "ca.pem").read_bytes() == ca and tmp_path / "ca.pem" not in written
    load(CertificateDir(tmp_path).agent("late"))  # signed by the kept CA: it checks
    make_certificates(tmp_path, new_ca=True)
    assert (tmp_path / "ca.pem").read_bytes() != ca


# ------------------------------------------------------------------------- peer identity


class _Context:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_the_peer_identity_of_an_agent_certificate_names_the_agent() -> None:
    ctx = _Context(
        {
            "transport_security_type": [b"ssl"],
            "x509_common_name": [b"a1"],
            "x509_subject_alternative_name": [b"urn:deerflow:agent:a1", b"localhost"],
            "peer_uri": [b"urn:deerflow:agent:a1"],
        }
    )
    identity = peer_identity(ctx)
    assert identity is not None
    assert (identity.common_name, identity.agent_id) == ("a1", "a1")


def test_a_client_certificate_or_a_plaintext_peer_names_no_agent() -> None:
    client = _Context(
        {"transport_security_type": [b"ssl"], "x509_common_name": [b"deerflow-client"]}
    )
    identity = peer_identity(client)
    assert identity is not None and identity.agent_id is None
    assert peer_identity(_Context({"transport_security_type": [b"insecure"]})) is None
    assert peer_identity(_Context({"transport_security_type": [b"ssl"]})) is None
