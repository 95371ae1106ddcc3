"""Several etcd endpoints (the members of a cluster): the client uses one it can reach and moves
to another when that one fails. Two TCP proxies to the session's etcd stand in for two members
of one cluster: cutting one is a member going away while the store stays the same."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from deerflow_common.etcd import EtcdClient, Keys, parse_endpoints, retry_unavailable
from deerflow_common.etcd.endpoints import grpc_target

from ..tcp_proxy import Proxy


def test_endpoints_may_be_a_list_or_comma_separated() -> None:
    assert parse_endpoints("127.0.0.1:2379, 10.0.0.2:2379") == [
        ("127.0.0.1", 2379),
        ("10.0.0.2", 2379),
    ]
    assert parse_endpoints(["http://a:1", "b:2"]) == [("a", 1), ("b", 2)]
    with pytest.raises(ValueError, match="'b' must look like 'host:port'"):
        parse_endpoints("a:1,b")
    with pytest.raises(ValueError, match="at least one"):
        parse_endpoints(" , ")


def test_several_endpoints_become_one_address_list_target() -> None:
    assert grpc_target([("127.0.0.1", 2379)]) == "127.0.0.1:2379"
    assert grpc_target([("127.0.0.1", 1), ("127.0.0.2", 2)]) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert grpc_target([("::1", 1), ("::1", 2)]) == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(ValueError, match="none of the etcd endpoints resolves"):
        grpc_target([("no-such-host.invalid", 1), ("no-such-host.invalid", 2)])


async def _put(client: EtcdClient, key: str, value: bytes) -> int:
    """A put, repeated with backoff while no member answers (each try is bounded by the
    client's timeout; the whole by 20 s)."""
    async with asyncio.timeout(20):
        return await retry_unavailable(lambda: client.put(key, value))


async def test_a_dead_first_endpoint_is_passed_over(
    make_client: Callable[..., EtcdClient],
    make_proxy: Callable[[], Awaitable[Proxy]],
    keys: Keys,
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    live = await make_proxy()
    client = make_client(f"{dead},{live.address}")
    await _put(client, keys.prefix + "k", b"v")
    got = await client.get(keys.prefix + "k")
    assert got is not None and got.value == b"v"


async def test_the_client_moves_to_another_member_when_the_one_in_use_goes(
    make_client: Callable[..., EtcdClient],
    make_proxy: Callable[[], Awaitable[Proxy]],
    keys: Keys,
) -> None:
    first, second = await make_proxy(), await make_proxy()
    client = make_client([first.address, second.address])
    await _put(client, keys.prefix + "a", b"1")
    # Pick-first: everything went through the first member so far.
    assert first.connections_accepted >= 1 and second.connections_accepted == 0
    await first.cut()
    await _put(client, keys.prefix + "b", b"2")
    assert second.connections_accepted >= 1
    a, b = await client.get(keys.prefix + "a"), await client.get(keys.prefix + "b")
    assert a is not None and a.value == b"1" and b is not None and b.value == b"2"
