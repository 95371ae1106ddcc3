"""Issue #17's acceptance: a cluster started as docs/SECURITY.md's production setup (certificates
from ``deerflow certs``, tokens from ``deerflow token new``, a controller on a non-loopback bind
with TLS, mutual TLS and ``--auth-file``, an agent with its own certificate and the join token)
refuses an agent without a token, a client without a token, and another tenant's job, while a
good job runs. Real processes; the CLI commands as the docs give them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from deerflow_bench._launcher import ControllerProcess
from deerflow_common.tls import CertificateDir, aio_channel
from deerflow_controller.client import (
    AsyncClient,
    AuthenticationError,
    NotFoundError,
    Task,
)
from deerflow_controller.service.launcher import AgentProcess
from deerflow_protos import agent_pb2_grpc

DEERFLOW = str(Path(sys.executable).parent / "deerflow")


def deerflow(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([DEERFLOW, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def token_new(auth: Path, *args: str) -> str:
    """``deerflow token new ARGS >> auth.toml``: returns the token it printed on stderr."""
    done = deerflow("token", "new", *args)
    with auth.open("a") as f:
        f.write(done.stdout + "\n")
    return done.stderr.strip().rsplit(" ", 1)[-1]


async def test_the_production_setup_refuses_agents_and_clients_without_tokens_and_other_tenants(
    tmp_path: Path,
) -> None:
    # Step 1: certificates (the CA, the controller's, one per agent, a client's).
    certs = CertificateDir(tmp_path / "tls")
    deerflow("certs", str(certs.path), "--agent", "agent-1", "--agent", "agent-2")
    # The auth file: a join token for agents, two tenants' users.
    auth = tmp_path / "auth.toml"
    auth.write_text("")
    join = token_new(auth, "--agent", "--name", "agents")
    alice = token_new(auth, "--tenant", "research")
    bob = token_new(auth, "--tenant", "batch")
    assert join not in auth.read_text() and alice not in auth.read_text()  # digests only
    # Step 2: the controller, bound to every address, closed.
    server = certs.controller(mutual=True)
    assert server.cert is not None and server.key is not None and server.ca is not None
    controller = await ControllerProcess.start(
        [
            *("--tls-cert", str(server.cert), "--tls-key", str(server.key)),
            *("--tls-client-ca", str(server.ca), "--auth-file", str(auth)),
        ],
        host="0.0.0.0",
    )
    agents: list[AgentProcess] = []
    try:
        address = "127.0.0.1:" + controller.address.rpartition(":")[2]

        def agent_args(agent_id: str) -> list[str]:
            files = certs.agent(agent_id)
            return [
                *("--tls-ca", str(files.ca), "--tls-cert", str(files.cert)),
                *("--tls-key", str(files.key), "--slots", "4"),
            ]

        # Step 3: an agent with its certificate and the join token; another with its
        # certificate (good for the handshake) but no token.
        agents.append(
            await AgentProcess.start(
                address, "agent-1", agent_args("agent-1"), env={"DEERFLOW_JOIN_TOKEN": join}
            )
        )
        agents.append(
            await AgentProcess.start(
                address, "agent-2", agent_args("agent-2"), env={"DEERFLOW_JOIN_TOKEN": ""}
            )
        )
        # Step 4: clients with the client certificate and a token.
        async with (
            AsyncClient(address, token=alice, tls=certs.client(), timeout_s=30) as a,
            AsyncClient(address, token=bob, tls=certs.client(), timeout_s=30) as b,
            AsyncClient(address, tls=certs.client(), timeout_s=30) as anonymous,
        ):
            assert [x.agent_id for x in await a.agents(wait_for=1, timeout_s=30)] == ["agent-1"]
            job = await a.submit([Task(f"t{i}", "echo", {"i": i}) for i in range(20)])
            # A client without a token: UNAUTHENTICATED, for a submit and for a read.
            with pytest.raises(AuthenticationError):
                await anonymous.submit([Task("x", "echo", {})])
            with pytest.raises(AuthenticationError):
                await anonymous.get_job(job.job_id)
            # Another tenant's job: NOT_FOUND, as for a job that does not exist.
            with pytest.raises(NotFoundError) as theirs:
                await b.get_job(job.job_id)
            with pytest.raises(NotFoundError) as nobodys:
                await b.get_job("no-such-job")
            assert str(theirs.value).replace(job.job_id, "ID") == str(nobodys.value).replace(
                "no-such-job", "ID"
            )
            with pytest.raises(NotFoundError):
                await b.cancel(job.job_id)
            # An agent stream with a certificate and no token, opened by hand: UNAUTHENTICATED.
            async with aio_channel(address, certs.agent("agent-2")) as channel:
                # Refused on the call's metadata, before any message is read: no Hello is
                # written, as a write racing the refusal can end the call with the client
                # core's own INTERNAL instead of the server's status.
                call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
                assert await asyncio.wait_for(call.code(), 30) == grpc.StatusCode.UNAUTHENTICATED
            # The good job ran on the good agent only, and the tokenless agent never joined.
            results = await job.wait(timeout_s=60)
            assert len(results) == 20 and all(r.ok for r in results.values())
            assert {r.agent_id for r in results.values()} == {"agent-1"}
            assert [x.agent_id for x in await a.agents()] == ["agent-1"]
    finally:
        for agent in agents:
            await agent.stop()
        await controller.stop()
