"""Leader election and failover with real controller and agent processes on a real etcd:
standbys refuse work and name the leader; SIGKILL of the leader with a standby up loses no
accepted task and delivers each result once (chaos test b)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Literal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deerflow_bench import HaCluster
from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, Task
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2

pytestmark = pytest.mark.timeout(180)


async def test_a_standby_refuses_work_names_the_leader_and_reports_not_serving(
    etcd_server: LocalEtcd, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    async with make_ha_cluster(etcd_server.endpoint, controllers=2, agents=0) as cluster:
        leader = await cluster.leader()
        standby = next(c for c in cluster.controllers if c is not leader)
        async with grpc.aio.insecure_channel(standby.address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            call = client_pb2_grpc.JobServiceStub(channel).SubmitJob(
                client_pb2.SubmitJobRequest(tasks=[common_pb2.TaskSpec(id="a", handler="echo")])
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert leader.address in (refused.value.details() or "")
            trailing = dict(await call.trailing_metadata() or ())
            assert trailing.get("deerflow-leader") == leader.address
        # The SDK, given only the standby, follows its pointer to the leader.
        async with AsyncClient(standby.address, timeout_s=30) as client:
            job = await client.submit([Task("a", "echo", "x")])
            assert job.accepted == 1
            assert client.address == leader.address
        # So does a submit that waits for its results over a Session stream (which the standby
        # refuses like any call).
        async with AsyncClient(standby.address, timeout_s=30) as client:
            job = await client.submit([Task("b", "echo", "y")], watch="results")
            assert job.accepted == 1
            assert client.address == leader.address


@pytest.mark.parametrize("watch", ["", "results"])
async def test_leader_sigkill_with_a_standby_loses_no_accepted_task_and_delivers_each_once(
    watch: Literal["", "results"],
    etcd_server: LocalEtcd,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    """``watch="results"``: the submit is acknowledged over the SDK's Session stream (only once
    journaled) and its results come on it until the kill, then through WatchJob."""
    n = 2000
    async with make_ha_cluster(etcd_server.endpoint, controllers=2, agents=2, slots=16) as cluster:
        leader = await cluster.leader()
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=2)
            ids = [f"t{i:04d}" for i in range(n)]
            job = await client.submit(
                [Task(t, "sleep", {"seconds": 0.02}) for t in ids], watch=watch
            )
            assert job.accepted == n
            delivered: list[str] = []
            async for result in job.results(timeout_s=150):
                assert result.ok, result
                delivered.append(result.task_id)
                if len(delivered) == 300:
                    leader.signal(signal.SIGKILL)
        assert sorted(delivered) == ids  # every accepted task, each result once
        successor = await cluster.leader()
        assert successor is not leader
        assert leader.returncode is not None


async def test_a_controller_started_after_the_only_one_died_restores_its_accepted_jobs(
    etcd_server: LocalEtcd, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    async with make_ha_cluster(etcd_server.endpoint, controllers=1, agents=1, slots=4) as cluster:
        first = cluster.controllers[0]
        async with AsyncClient(first.address, timeout_s=60) as client:
            await client.agents(wait_for=1)
            done = await client.submit([Task("quick", "echo", "q")], job_id="done-job")
            assert (await done.wait(timeout_s=30))["quick"].ok
            ids = [f"t{i:02d}" for i in range(20)]
            job = await client.submit(
                [Task(t, "sleep", {"seconds": 0.5}) for t in ids], job_id="long-job"
            )
            first.signal(signal.SIGKILL)
            await first.wait(30)
        successor = await cluster.add_controller()
        assert await cluster.leader() is successor
        async with AsyncClient(successor.address, timeout_s=60) as client:
            results = await client.wait(job.job_id, timeout_s=120)
            assert sorted(results) == ids
            assert all(r.ok for r in results.values())


async def test_a_submit_made_while_no_controller_leads_is_accepted_once_by_the_next_leader(
    etcd_server: LocalEtcd, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    async with make_ha_cluster(etcd_server.endpoint, controllers=2, agents=1) as cluster:
        leader = await cluster.leader()
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=1)
            leader.signal(signal.SIGKILL)
            await leader.wait(30)
            # The standby refuses until its campaign wins; the SDK retries with the job id it
            # chose, so the job is accepted exactly once.
            job = await client.submit([Task(f"t{i}", "echo", "e") for i in range(50)])
            assert job.accepted == 50
            results = await job.wait(timeout_s=60)
        assert sorted(results) == sorted(f"t{i}" for i in range(50))
        assert await cluster.leader() is not leader
