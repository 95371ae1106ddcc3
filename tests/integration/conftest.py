"""Fixtures that start real controller and agent processes on free loopback ports.

Every process a test starts is stopped by the fixture, by its own pid, even when the test fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from deerflow_controller.client import AsyncClient
from deerflow_controller.launcher import Cluster

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
    ) -> Cluster:
        cluster = Cluster(
            agents,
            agent_args=["--slots", str(slots), *agent_args],
            controller_args=["--prefetch", str(prefetch), *controller_args],
        )
        started.append(cluster)
        return cluster

    yield factory
    for cluster in started:
        await cluster.stop()


async def connect(cluster: Cluster) -> AsyncClient:
    """A client whose controller has all of the cluster's agents connected."""
    client = AsyncClient(cluster.address, timeout_s=30)
    await client.agents(wait_for=len(cluster.agents), timeout_s=30)
    return client
