"""Fixtures that start real controller and agent processes on free loopback ports.

Every process a test starts is stopped by the fixture, by its own pid, even when the test fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deerflow_bench import Cluster, SimulatorProcess
from deerflow_controller.client import AsyncClient
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
