"""Chaos test (d): an agent's lease and its stream fail independently, and neither case
delivers a result twice.

- Lease lost, stream alive (the agent is cut off from etcd only): the leader declares it dead
  a short grace after the lease ends, closes its stream and runs its attempts elsewhere; the
  agent reconnects and what it still runs is cancelled or adopted, never reported twice.
- Stream lost, lease alive (the network path to the controller breaks): the usual reconnect;
  the agent's lease is untouched and its running attempts are reclaimed from its Hello."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import EtcdClient, EventKind, Keys, KeyValue, LocalEtcd
from deerflow_controller.client import AsyncClient, Task

from ..tcp_proxy import Proxy

pytestmark = pytest.mark.timeout(180)


async def connected_at(client: AsyncClient, agent_id: str) -> float:
    return {a.agent_id: a.connected_at for a in await client.agents()}.get(agent_id, 0.0)


async def wait_reconnected(client: AsyncClient, agent_id: str, before: float) -> None:
    """Until the controller shows ``agent_id`` connected on a newer stream than ``before``.
    Polls the controller's agent list (an observable condition) every 50 ms."""
    # The controller offers no watch of agent streams: poll its list, with the caller's deadline.
    while await connected_at(client, agent_id) <= before:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def registered(etcd: EtcdClient, key: str) -> KeyValue:
    """The agent's record, once it is there (watched from a consistent read, no polling)."""
    snapshot = await etcd.get_prefix(key)
    for kv in snapshot.kvs:
        if kv.key == key:
            return kv
    async with contextlib.aclosing(etcd.watch_key(key, snapshot.revision + 1)) as changes:
        async for change in changes:
            if change.kind is EventKind.PUT:
                found = await etcd.get(key)
                if found is not None:
                    return found
    raise AssertionError("unreachable: the watch never ends")


async def terminal_counts(client: AsyncClient, job_id: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    async for event in client.events(job_id, terminal_only=True, timeout_s=120):
        assert event.state == "SUCCEEDED", event
        counts[event.task_id] += 1
    return counts


async def test_an_agent_whose_lease_ends_while_its_stream_lives_delivers_nothing_twice(
    etcd_server: LocalEtcd,
    etcd_client: EtcdClient,
    etcd_proxy: Proxy,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    async with make_ha_cluster(etcd_server.endpoint, controllers=1, agents=1, slots=8) as cluster:
        await cluster.add_agent("cut-off", ["--lease-ttl", "1"], etcd=etcd_proxy.address)
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=2)
            async with asyncio.timeout(30):
                record = await registered(etcd_client, keys.agent("cut-off"))
            before = await connected_at(client, "cut-off")
            ids = [f"t{i:02d}" for i in range(48)]
            job = await client.submit([Task(t, "sleep", {"seconds": 1.0}) for t in ids])
            await etcd_proxy.cut()  # etcd is gone for this agent only; its stream lives on
            async with asyncio.timeout(30):
                watch = etcd_client.watch_key(keys.agent("cut-off"), record.mod_revision + 1)
                async with contextlib.aclosing(watch):
                    async for change in watch:
                        if change.kind is EventKind.DELETE:
                            break
                await wait_reconnected(client, "cut-off", before)
            counts = await terminal_counts(client, job.job_id)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}


async def test_an_agent_whose_stream_breaks_while_its_lease_lives_delivers_nothing_twice(
    etcd_server: LocalEtcd,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    # The controller advertises a path through the proxy, so agents reach it only that way.
    proxy = await Proxy().start()
    try:
        cluster = make_ha_cluster(etcd_server.endpoint, controllers=0, agents=0, slots=8)
        async with cluster:
            controller = await cluster.add_controller(["--advertise", proxy.address])
            proxy.target = controller.address
            await cluster.leader()
            for agent_id in ("a1", "a2"):
                await cluster.add_agent(agent_id)
            async with AsyncClient(controller.address, timeout_s=60) as client:
                await client.agents(wait_for=2)
                async with asyncio.timeout(30):
                    leases = {a: await registered(etcd_client, keys.agent(a)) for a in ("a1", "a2")}
                before = {a: await connected_at(client, a) for a in ("a1", "a2")}
                ids = [f"t{i:02d}" for i in range(48)]
                job = await client.submit([Task(t, "sleep", {"seconds": 1.0}) for t in ids])
                # Both agents run attempts now; their streams break, their leases do not.
                async with asyncio.timeout(30):
                    async for event in client.events(job.job_id):
                        if event.state == "RUNNING":
                            break
                await proxy.sever()
                async with asyncio.timeout(30):
                    for a in ("a1", "a2"):
                        await wait_reconnected(client, a, before[a])
                for a, kv in leases.items():
                    now = await etcd_client.get(keys.agent(a))
                    assert now is not None
                    assert now.lease == kv.lease  # the lease lived through the break
                counts = await terminal_counts(client, job.job_id)
        assert sorted(counts) == ids
        assert set(counts.values()) == {1}
    finally:
        await proxy.cut()
