"""TLS and mutual TLS with real daemons as processes and real certificates made by
``deerflow certs`` in tmp_path: jobs run, plaintext and certificate-less clients are refused
with a sentence, and replaced certificate files are served without a restart (gRPC and HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest

from deerflow_bench import Cluster
from deerflow_common.tls import CertificateDir, TlsFiles, client_ssl_context
from deerflow_controller.client import AsyncClient, Task, UnavailableError
from deerflow_controller.service.credentials import digest
from deerflow_controller.service.launcher import AgentProcess

BIN = Path(sys.executable).parent
DEERFLOW = str(BIN / "deerflow")
CONTROLLER = str(BIN / "deerflow-controller")
AGENT = str(BIN / "deerflow-agent")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def deerflow_certs(directory: Path, *args: str) -> CertificateDir:
    done = subprocess.run(
        [DEERFLOW, "certs", str(directory), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return CertificateDir(directory)


@pytest.fixture
def certs(tmp_path: Path) -> CertificateDir:
    return deerflow_certs(tmp_path / "certs", "--agent", "agent-1")


async def _echo(client: AsyncClient) -> bytes:
    job = await client.submit([Task("t", "echo", {"x": 1})])
    result = await job.result("t", timeout_s=30)
    assert result.ok, result.error
    return result.output


async def _agents_of(client: AsyncClient, n: int) -> list[str]:
    return [a.agent_id for a in await client.agents(wait_for=n, timeout_s=30)]


# ------------------------------------------------------------------------- TLS


async def test_a_job_runs_on_a_tls_controller_with_a_tls_agent(certs: CertificateDir) -> None:
    async with (
        Cluster(1, tls=certs, agent_args=["--slots", "2"]) as cluster,
        AsyncClient(cluster.address, tls=TlsFiles(ca=certs.ca)) as client,
    ):
        assert await _agents_of(client, 1) == ["agent-1"]
        assert await _echo(client) == b'{"x":1}'


async def test_a_plaintext_client_of_a_tls_controller_is_told_to_use_tls(
    certs: CertificateDir,
) -> None:
    async with Cluster(0, tls=certs) as cluster, AsyncClient(cluster.address) as client:
        with pytest.raises(UnavailableError, match=r"if it serves TLS, give the client its CA"):
            await client.agents(timeout_s=10)


async def test_a_client_that_does_not_trust_the_controller_is_told_why(
    certs: CertificateDir, tmp_path: Path
) -> None:
    stranger = deerflow_certs(tmp_path / "other")
    async with (
        Cluster(0, tls=certs) as cluster,
        AsyncClient(cluster.address, tls=TlsFiles(ca=stranger.ca)) as client,
    ):
        with pytest.raises(UnavailableError, match=r"CERTIFICATE_VERIFY_FAILED.*not signed by"):
            await client.agents(timeout_s=10)


async def test_a_tls_client_of_a_plaintext_controller_is_told_it_does_not_serve_tls(
    certs: CertificateDir,
) -> None:
    async with (
        Cluster(0) as cluster,
        AsyncClient(cluster.address, tls=TlsFiles(ca=certs.ca)) as client,
    ):
        with pytest.raises(UnavailableError, match=r"does not serve TLS"):
            await client.agents(timeout_s=10)


# ------------------------------------------------------------------------- mutual TLS


async def test_under_mutual_tls_a_client_without_a_certificate_is_refused_at_the_handshake(
    certs: CertificateDir,
) -> None:
    async with Cluster(1, tls=certs, mutual_tls=True, agent_args=["--slots", "2"]) as cluster:
        async with AsyncClient(cluster.address, tls=TlsFiles(ca=certs.ca)) as bare:
            with pytest.raises(UnavailableError, match="a client certificate"):
                await bare.agents(timeout_s=10)
        async with AsyncClient(cluster.address, tls=certs.client()) as client:
            assert await _agents_of(client, 1) == ["agent-1"]
            assert await _echo(client) == b'{"x":1}'


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        DEERFLOW, *args, stdout=PIPE, stderr=PIPE, env={**os.environ, **(env or {})}
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_cli_talks_mutual_tls_given_flags_or_the_environment(
    certs: CertificateDir,
) -> None:
    client = certs.client()
    async with Cluster(1, tls=certs, mutual_tls=True, agent_args=["--slots", "2"]) as cluster:
        async with AsyncClient(cluster.address, tls=client) as sdk:
            await _agents_of(sdk, 1)
        flags = ["--tls-ca", str(client.ca), "--tls-cert", str(client.cert)]
        flags += ["--tls-key", str(client.key)]
        code, out, err = await _cli("agents", "--json", "--controller", cluster.address, *flags)
        assert code == 0, err
        assert [a["agent_id"] for a in json.loads(out)] == ["agent-1"]
        env = {
            "DEERFLOW_TLS_CA": str(client.ca),
            "DEERFLOW_TLS_CERT": str(client.cert),
            "DEERFLOW_TLS_KEY": str(client.key),
        }
        code, out, err = await _cli("stats", "--json", "--controller", cluster.address, env=env)
        assert code == 0, err
        code, _, err = await _cli("stats", "--controller", cluster.address)
        assert code == 1 and "if it serves TLS, give the client its CA" in err


async def test_under_mutual_tls_an_agent_without_a_certificate_never_joins(
    certs: CertificateDir,
) -> None:
    async with Cluster(0, tls=certs, mutual_tls=True) as cluster:
        # The CA only: the controller asks for a certificate and refuses the handshake.
        bare = await AgentProcess.start(cluster.address, "bare", ["--tls-ca", str(certs.ca)])
        try:
            await cluster.add_agent("agent-1")
            async with AsyncClient(cluster.address, tls=certs.client()) as client:
                assert await _agents_of(client, 1) == ["agent-1"]
                assert await _echo(client) == b'{"x":1}'
                assert [a.agent_id for a in await client.agents()] == ["agent-1"]
                assert bare.returncode is None  # still trying, never let in
        finally:
            await bare.stop()


async def test_embedded_agents_of_a_mutual_tls_controller_join(certs: CertificateDir) -> None:
    cert, key = certs.pair("controller")
    cluster = Cluster(
        0,
        controller_args=[
            "--local-agents",
            "1",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--tls-client-ca",
            str(certs.ca),
        ],
    )
    async with cluster, AsyncClient(cluster.address, tls=certs.client()) as client:
        assert len(await _agents_of(client, 1)) == 1
        assert await _echo(client) == b'{"x":1}'


# ------------------------------------------------------------------------- reload


def _replace(files: TlsFiles, source: CertificateDir) -> None:
    """Rotate as an operator would: write the new files beside, rename over the old."""
    assert files.cert is not None and files.key is not None
    cert, key = source.pair("controller")
    for new, old in ((key, files.key), (cert, files.cert)):
        tmp = old.with_name(old.name + ".new")
        shutil.copy(new, tmp)
        tmp.replace(old)


def _served(tmp_path: Path, certs: CertificateDir) -> TlsFiles:
    served = TlsFiles(tmp_path / "served.pem", tmp_path / "served.key")
    _replace(served, certs)
    return served


async def test_replaced_certificate_files_are_served_to_new_grpc_connections_without_a_restart(
    certs: CertificateDir, tmp_path: Path
) -> None:
    served = _served(tmp_path, certs)
    rotated = deerflow_certs(tmp_path / "rotated")
    args = ["--tls-cert", str(served.cert), "--tls-key", str(served.key)]
    async with Cluster(0, controller_args=args) as cluster:
        async with AsyncClient(cluster.address, tls=TlsFiles(ca=certs.ca)) as old:
            await old.agents(timeout_s=10)
        _replace(served, rotated)
        async with AsyncClient(cluster.address, tls=TlsFiles(ca=rotated.ca)) as new:
            await new.agents(timeout_s=10)
        async with AsyncClient(cluster.address, tls=TlsFiles(ca=certs.ca)) as stale:
            with pytest.raises(UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
                await stale.agents(timeout_s=10)
        assert cluster.controller is not None and cluster.controller.returncode is None


async def _healthz(port: int, ca: Path) -> int:
    ctx = client_ssl_context(TlsFiles(ca=ca))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
        session.get(f"https://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status


async def test_the_http_side_serves_https_and_reloads_replaced_files(
    certs: CertificateDir, tmp_path: Path
) -> None:
    served = _served(tmp_path, certs)
    rotated = deerflow_certs(tmp_path / "rotated")
    port = free_port()
    args = ["--http-port", str(port), "--tls-cert", str(served.cert), "--tls-key", str(served.key)]
    async with Cluster(0, controller_args=args):
        assert await _healthz(port, certs.ca) == 200
        with pytest.raises(aiohttp.ClientError):  # plaintext HTTP is not served
            async with aiohttp.ClientSession() as session:
                await session.get(
                    f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(5)
                )
        _replace(served, rotated)
        assert await _healthz(port, rotated.ca) == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _healthz(port, certs.ca)


async def test_the_http_side_under_mutual_tls_wants_a_client_certificate(
    certs: CertificateDir,
) -> None:
    port = free_port()
    async with Cluster(0, tls=certs, mutual_tls=True, controller_args=["--http-port", str(port)]):
        with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
            await _healthz(port, certs.ca)
        ctx = client_ssl_context(certs.client())
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
            session.get(f"https://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200


async def test_an_agent_with_a_certificate_serves_its_metrics_over_https(
    certs: CertificateDir,
) -> None:
    port = free_port()
    async with Cluster(1, tls=certs, agent_args=["--metrics-port", str(port)]) as cluster:
        async with AsyncClient(cluster.address, tls=TlsFiles(ca=certs.ca)) as client:
            await _agents_of(client, 1)
        assert await _healthz(port, certs.ca) == 200


# ------------------------------------------------------------------------- start-up errors


def _start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def test_a_controller_given_a_missing_or_mismatched_file_names_the_flag(
    certs: CertificateDir, tmp_path: Path
) -> None:
    other = deerflow_certs(tmp_path / "other")
    cert, _ = certs.pair("controller")
    _, wrong_key = other.pair("controller")
    base = [CONTROLLER, "--port", "0", "--http-port", "0"]
    done = _start(*base, "--tls-cert", str(cert), "--tls-key", str(wrong_key))
    assert done.returncode == 2
    assert f"--tls-key {wrong_key} is not the private key of --tls-cert {cert}" in done.stderr
    assert "Traceback" not in done.stderr
    done = _start(*base, "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(wrong_key))
    assert done.returncode == 2 and "--tls-cert" in done.stderr and "no such file" in done.stderr


def test_an_agent_or_a_cli_command_given_a_bad_file_names_the_flag(
    certs: CertificateDir, tmp_path: Path
) -> None:
    done = _start(AGENT, "--tls-ca", str(tmp_path / "none.pem"))
    assert done.returncode == 2 and "--tls-ca" in done.stderr and "no such file" in done.stderr
    done = _start(DEERFLOW, "agents", "--tls-cert", str(certs.pair("client")[0]))
    assert done.returncode == 2 and "--tls-cert needs --tls-key too" in done.stderr


# ------------------------------------------------------------------------- with the auth file


async def test_under_mutual_tls_an_agent_listed_by_certificate_identity_joins_without_a_token(
    certs: CertificateDir, tmp_path: Path
) -> None:
    deerflow_certs(certs.path, "--agent", "agent-2")
    token = "alice-" + secrets.token_urlsafe(16)
    auth = tmp_path / "auth.toml"
    auth.write_text(
        '[[agent]]\nname = "gpu"\nidentity = "agent-1"\n\n'
        f'[[client]]\nname = "alice"\ntenant = "a"\nrole = "user"\nsha256 = "{digest(token)}"\n'
    )
    cluster = Cluster(
        0,
        tls=certs,
        mutual_tls=True,
        controller_args=["--auth-file", str(auth)],
        agent_args=["--slots", "2"],
    )
    async with cluster:
        # agent-2's certificate is good for the handshake, but the auth file does not list it.
        await cluster.add_agent("agent-2")
        await cluster.add_agent("agent-1")
        async with AsyncClient(cluster.address, token=token, tls=certs.client()) as client:
            assert await _agents_of(client, 1) == ["agent-1"]
            assert await _echo(client) == b'{"x":1}'
            assert [a.agent_id for a in await client.agents()] == ["agent-1"]
