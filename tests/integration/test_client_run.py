"""``run``: submit a job and wait for it in one call, on both clients, against a real controller
and agents; from a pool of threads sharing one blocking client (DeerFlow's synchronous tools)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from deerflow_controller.client import Client, InvalidJobError, Task

from .conftest import ClusterFactory, connect


async def test_a_pool_of_threads_sharing_one_client_runs_jobs_each_getting_its_own_results(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(2, slots=8) as cluster:
        address = cluster.address

        def pool() -> list[dict[str, bytes]]:
            with Client(address, timeout_s=30) as client:
                client.agents(wait_for=2, timeout_s=30)

                def one(j: int) -> dict[str, bytes]:
                    tasks = [Task(f"t{i}", "echo", f"{j}-{i}".encode()) for i in range(10)]
                    return {tid: r.output for tid, r in client.run(tasks).items()}

                with ThreadPoolExecutor(8) as threads:
                    return list(threads.map(one, range(40)))

        outputs = await asyncio.to_thread(pool)
    assert outputs == [{f"t{i}": f"{j}-{i}".encode() for i in range(10)} for j in range(40)]


async def test_a_refused_job_raises_the_submit_error_from_run_on_both_clients(
    make_cluster: ClusterFactory,
) -> None:
    bad = [Task("a", "echo", b"x"), Task("a", "echo", b"y")]  # a duplicate task id
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        with pytest.raises(InvalidJobError) as async_info:
            await client.run(bad)
        await client.close()

        def blocking() -> None:
            with Client(cluster.address, timeout_s=30) as sync_client:
                sync_client.run(bad)

        with pytest.raises(InvalidJobError) as sync_info:
            await asyncio.to_thread(blocking)
    assert async_info.value.code == sync_info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert async_info.value.message == sync_info.value.message


async def test_async_run_returns_every_result_of_a_dag(make_cluster: ClusterFactory) -> None:
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        results = await client.run(
            [Task("a", "echo", b"first"), Task("b", "echo", b"then", depends_on=["a"])],
            name="dag",
        )
        await client.close()
    assert {tid: r.output for tid, r in results.items()} == {"a": b"first", "b": b"then"}
