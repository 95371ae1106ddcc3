"""Chaos test (c): etcd stops mid-run and starts again. Every controller loses its lease (and
stops dispatching), agents lose theirs; running attempts carry on. When etcd is back, a leader
is elected, restores the journal, adopts what the agents still run, and the run completes with
each result delivered once.

etcd is down from its stop until every controller has noticed (reports NOT_SERVING: its lease
deadline passed, TTL 3 s), then started again: the outage is waited on, never slept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from deerflow_bench import HaCluster, wait_serving
from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, Task

pytestmark = pytest.mark.timeout(240)


async def test_an_etcd_outage_mid_run_does_not_stop_the_run(
    restartable_etcd: LocalEtcd, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    n = 300
    async with make_ha_cluster(
        restartable_etcd.endpoint, controllers=2, agents=2, slots=8
    ) as cluster:
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=2)
            ids = [f"t{i:03d}" for i in range(n)]
            job = await client.submit([Task(t, "sleep", {"seconds": 0.2}) for t in ids])
            delivered: list[str] = []
            async for result in job.results(timeout_s=200):
                assert result.ok, result
                delivered.append(result.task_id)
                if len(delivered) == 60:
                    await asyncio.to_thread(restartable_etcd.stop)
                    async with asyncio.timeout(30):
                        await asyncio.gather(
                            *(wait_serving(c.address, serving=False) for c in cluster.controllers)
                        )
                    await asyncio.to_thread(restartable_etcd.start)
        assert sorted(delivered) == ids
        assert all(c.returncode is None for c in cluster.controllers)
