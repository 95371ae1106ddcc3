"""A new leader's reconnect grace with real controller and agent processes on a real etcd: it
waits for the agents that are alive, not for one that died together with the old leader (the
same node went down) and is still listed under its lease."""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Callable

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import EtcdClient, Keys, LocalEtcd, Session, register
from deerflow_controller.client import AsyncClient, Task
from deerflow_controller.ha.reconnect import lease_kept_alive

pytestmark = pytest.mark.timeout(180)


def test_a_lease_refreshed_every_third_of_its_ttl_counts_as_kept_alive() -> None:
    # Refreshed a moment ago (etcd truncates 4.99 to 4), or one interval plus a late second ago.
    assert lease_kept_alive(4, 5)
    assert lease_kept_alive(2, 5)
    # Silent for more than 3 s of a 5 s lease (a 1.67 s keepalive interval), or gone.
    assert not lease_kept_alive(1, 5)
    assert not lease_kept_alive(-1, 0)
    assert lease_kept_alive(8, 15)
    assert not lease_kept_alive(7, 15)


async def test_a_new_leader_does_not_wait_out_the_grace_for_an_agent_that_died_with_the_old_leader(
    etcd_server: LocalEtcd, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    # A long grace and a long agent lease make the difference plain: waiting for the dead agent
    # would hold its tasks for the whole 20 s grace, and its record is listed for 15 s. A lease
    # that is not kept alive gives it away 7 s after its last keepalive (a 5 s interval + 2 s).
    async with make_ha_cluster(
        etcd_server.endpoint,
        controllers=2,
        agents=2,
        slots=4,
        agent_args=("--lease-ttl", "15"),
        controller_args=("--reconnect-grace", "20"),
    ) as cluster:
        leader = await cluster.leader()
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=2)
            job = await client.submit([Task(f"t{i}", "sleep", {"seconds": 120}) for i in range(4)])
            running: dict[str, str] = {}
            async for ev in client.events(job.job_id, timeout_s=60):
                if ev.state == "RUNNING":
                    running[ev.task_id] = ev.agent_id
                    if len(running) == 4:
                        break
            per_agent = collections.Counter(running.values())
            victim = next(a for a in cluster.agents if a.name == per_agent.most_common(1)[0][0])
            survivor = next(a for a in cluster.agents if a is not victim)
            victim_tasks = {t for t, a in running.items() if a == victim.name}

            killed_at = time.time()
            leader.signal(signal.SIGKILL)
            victim.signal(signal.SIGKILL)

            moved_at = 0.0
            async for ev in client.events(job.job_id, timeout_s=90):
                if ev.state == "RUNNING" and ev.agent_id == survivor.name and ev.time > killed_at:
                    victim_tasks.discard(ev.task_id)
                    if not victim_tasks:
                        moved_at = ev.time
                        break
            await client.cancel(job.job_id)
        assert moved_at, "the dead agent's tasks never ran on the survivor"
        # Election (3 s lease) plus the dead lease's silence; waiting out the grace takes 20 s+.
        assert moved_at - killed_at < 12.0


async def test_a_new_leader_still_waits_the_grace_for_a_listed_agent_whose_lease_is_kept_alive(
    etcd_server: LocalEtcd,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    # An agent that is alive (its lease is refreshed: here by the test) but has not reconnected
    # yet may be about to report what it runs: the new leader holds the restored work for it.
    grace_s = 8.0
    async with (
        make_ha_cluster(
            etcd_server.endpoint,
            controllers=2,
            agents=1,
            slots=2,
            controller_args=("--reconnect-grace", str(grace_s)),
        ) as cluster,
        Session(etcd_client, ttl=5) as session,
    ):
        await register(session, keys, "slow-to-return", {"handlers": ["sleep"], "slots": 2})
        leader = await cluster.leader()
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=1)
            job = await client.submit(
                [Task(f"t{i:03d}", "sleep", {"seconds": 0.5}) for i in range(200)]
            )
            killed_at = 0.0
            first_dispatch = 0.0
            async for ev in client.events(job.job_id, timeout_s=90):
                if not killed_at:
                    if ev.state == "SUCCEEDED":
                        killed_at = time.time()
                        leader.signal(signal.SIGKILL)
                elif ev.state == "DISPATCHED" and ev.time > killed_at:
                    first_dispatch = ev.time
                    break
            await client.cancel(job.job_id)
        assert first_dispatch - killed_at >= grace_s
