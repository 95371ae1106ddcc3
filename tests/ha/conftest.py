"""Fixtures for the HA tests: a real etcd on free loopback ports, a fresh key prefix per test,
and clusters of real controller and agent processes that campaign and register there.

Every process a test starts (etcd, controllers, agents) is stopped by the fixture that started
it, by its own pid, even when the test fails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import EtcdClient, Keys, LocalEtcd

from ..tcp_proxy import Proxy


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
async def etcd_proxy(etcd_server: LocalEtcd) -> AsyncIterator[Proxy]:
    """A TCP proxy to the test's etcd (``tests/tcp_proxy.py``): give one process its address
    and the test can stall, sever or cut that process's path to etcd alone. Cut at the end."""
    proxy = await Proxy(etcd_server.endpoint).start()
    yield proxy
    await proxy.cut()


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
