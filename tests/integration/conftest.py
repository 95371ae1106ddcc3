"""Fixtures that start real controller and agent processes on free loopback ports.

Every process a test starts is stopped by the fixture, by its own pid, even when the test fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from deerflow_bench import Cluster, SimulatorProcess
from deerflow_controller.client import AsyncClient
from deerflow_controller.config import ControllerConfig
from deerflow_controller.ha import LeaderGate, Term
from deerflow_controller.service.job_service import JobService
from deerflow_controller.service.shell import Shell
from deerflow_protos import client_pb2_grpc
from tests.auth_files import Tokens, auth_toml, write_atomically

PLUGINS_DIR = Path(__file__).parent / "plugins"

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def plugin_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/integration/plugins importable by the agent processes (for --handler)."""
    monkeypatch.setenv("PYTHONPATH", str(PLUGINS_DIR))


@pytest.fixture
async def make_cluster() -> AsyncIterator[Callable[..., Cluster]]:
    """Start clusters on demand: ``async with make_cluster(2, slots=4) as c``; all are stopped at
    the end of the test whatever happens."""
    started: list[Cluster] = []

    def factory(
        agents: int = 2,
        *,
        slots: int = 8,
        prefetch: int = 2,
        agent_args: tuple[str, ...] = (),
        controller_args: tuple[str, ...] = (),
        agent_env: dict[str, str] | None = None,
    ) -> Cluster:
        cluster = Cluster(
            agents,
            agent_args=["--slots", str(slots), *agent_args],
            controller_args=["--prefetch", str(prefetch), *controller_args],
            agent_env=agent_env,
        )
        started.append(cluster)
        return cluster

    yield factory
    for cluster in started:
        await cluster.stop()


@pytest.fixture
async def controller_alone(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A started controller with no agent: for refusals, which come before anything is
    scheduled (stopped with the other clusters of ``make_cluster``)."""
    cluster = make_cluster(0)
    await cluster.__aenter__()
    return cluster


async def connect(cluster: Cluster) -> AsyncClient:
    """A client whose controller has all of the cluster's agents connected."""
    client = AsyncClient(cluster.address, timeout_s=30)
    await client.agents(wait_for=len(cluster.agents), timeout_s=30)
    return client


@pytest.fixture
async def make_simulator() -> AsyncIterator[Callable[..., Awaitable[SimulatorProcess]]]:
    """Start provider simulator processes: ``await make_simulator("--key", "k=rpm:60")``."""
    started: list[SimulatorProcess] = []

    async def factory(*args: str) -> SimulatorProcess:
        sim = await SimulatorProcess.start(args)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        await sim.stop()


async def sim_stats(url: str, key: str) -> dict[str, Any]:
    """The simulator's counters for one API key, over HTTP."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/stats") as resp:
        data = await resp.json()
    return dict(data["keys"][key])


@pytest.fixture
def tokens() -> Tokens:
    """A fresh set of tokens (tests/auth_files.py) for a controller's --auth-file."""
    return Tokens()


@pytest.fixture
def auth_file(tmp_path: Path, tokens: Tokens) -> Path:
    """``tokens`` written as an --auth-file (digests only)."""
    path = tmp_path / "auth.toml"
    write_atomically(path, auth_toml(tokens))
    return path


@dataclass
class Served:
    """A JobService served in-process (``serve_in_process``) and a stub on it."""

    shell: Shell
    service: JobService
    gate: LeaderGate
    stub: client_pb2_grpc.JobServiceStub


async def serve_in_process(config: ControllerConfig) -> AsyncIterator[Served]:
    """JobService in-process on loopback behind a leader gate leading term 3 (as in HA mode,
    without a journal); no agents, so accepted jobs wait. Its shell shows what was accepted and
    watched; the gate's term can be ended as the leadership loop ends it."""
    shell = Shell(config)
    service = JobService(shell)
    gate = LeaderGate("")
    server = grpc.aio.server(interceptors=[gate])
    client_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    gate.address = f"127.0.0.1:{port}"
    gate.term, gate.leader_address = Term(3, None), gate.address
    await server.start()
    try:
        async with grpc.aio.insecure_channel(gate.address) as channel:
            yield Served(shell, service, gate, client_pb2_grpc.JobServiceStub(channel))
    finally:
        await server.stop(0)
