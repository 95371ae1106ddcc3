"""WatchJob streams are bounded (issue #17, finding 5): one client cannot open more than its
limit (RESOURCE_EXHAUSTED, one sentence with a retry hint), and streams whose reader reads
nothing hold a bounded share of memory each, not a whole log's worth."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import psutil
import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import AsyncClient, Task
from deerflow_protos import client_pb2, client_pb2_grpc

from .conftest import connect


async def test_one_client_cannot_open_more_watch_streams_than_its_limit(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(0, controller_args=("--max-watch-streams-per-client", "2"))
    await cluster.__aenter__()
    async with AsyncClient(cluster.address, timeout_s=30) as client:
        job = (await client.submit([Task("a", "echo")])).job_id  # no agent: never done
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        stub = client_pb2_grpc.JobServiceStub(channel)
        held = [stub.WatchJob(client_pb2.WatchJobRequest(job_id=job)) for _ in range(2)]
        for call in held:
            await call.initial_metadata()
        # The third waits for its turn behind the other two on the server: give it time to
        # be refused by reading its status (it ends at once when refused).
        extra = stub.WatchJob(client_pb2.WatchJobRequest(job_id=job), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in extra:
                pass
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = info.value.details() or ""
        assert "already has 2 WatchJob streams open" in details, details
        assert "--max-watch-streams-per-client 2" in details and "retry" in details
        assert len(details) < 300
        held[0].cancel()
        # Its place is freed once the controller sees the cancel: a new stream is admitted.
        for _ in range(100):
            again = stub.WatchJob(client_pb2.WatchJobRequest(job_id=job))
            await again.initial_metadata()
            await asyncio.sleep(0.05)
            if not again.done():
                break
        assert not again.done()
        again.cancel()
        held[1].cancel()


async def test_unread_watch_streams_hold_a_bounded_share_of_memory(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Before: each unread stream held one message of up to 4 MiB (300 streams of a 20 MB log
    grew the controller 641 MB); now the messages share 16 MiB (+68 MB measured)."""
    cluster = make_cluster(1, slots=16, agent_args=("--handler", "deerflow_bench.handlers:blob"))
    await cluster.__aenter__()
    assert cluster.controller is not None
    proc = psutil.Process(cluster.controller.pid)
    async with await connect(cluster) as client:
        tasks = [Task(f"t{i}", "blob", {"bytes": 10_000}) for i in range(2000)]
        job = (await client.submit(tasks)).job_id
        await client.wait(job, timeout_s=120)
    before = proc.memory_info().rss
    channels = [grpc.aio.insecure_channel(cluster.address) for _ in range(8)]
    calls = [
        client_pb2_grpc.JobServiceStub(channels[i % 8]).WatchJob(
            client_pb2.WatchJobRequest(job_id=job)
        )
        for i in range(200)
    ]
    try:
        for call in calls:
            await call.initial_metadata()
        peak = before
        for _ in range(20):  # sampled over 4 s: what the streams hold while nobody reads
            await asyncio.sleep(0.2)
            peak = max(peak, proc.memory_info().rss)
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
    grown_mb = (peak - before) / 1e6
    assert grown_mb < 120, f"200 unread streams grew the controller {grown_mb:.0f} MB"
