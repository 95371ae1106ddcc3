"""Clients of the real etcd that ``tests/conftest.py`` starts, fresh key prefixes, and proxies
a test can cut.

Each test works under a fresh key prefix, so tests share the server without seeing each other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from deerflow_common.etcd import EtcdClient, Keys, LocalEtcd

from ..tcp_proxy import Proxy

CLIENT_TIMEOUT_S = 2.0


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
) -> AsyncIterator[Callable[[], Awaitable[Proxy]]]:
    """Proxies to the session's etcd that a test can cut; all are cut after the test."""
    made: list[Proxy] = []

    async def factory() -> Proxy:
        proxy = await Proxy(etcd_server.endpoint).start()
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        await proxy.cut()
