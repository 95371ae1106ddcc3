"""Floods of many small valid requests against a real controller, measuring its RSS (issue
#17, finding 5): ``python -m deerflow_bench._floods watch|jobs|gates|metrics|inputs``. Not part
of the product; the numbers go to docs/SECURITY.md."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import aiohttp
import grpc
import psutil

from deerflow_bench import Cluster
from deerflow_controller.client import AsyncClient, Task
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2

N_STREAMS = int(os.environ.get("N_STREAMS", "300"))
AGENT_ARGS = ("--handler", "deerflow_bench.handlers:blob", "--slots", "16")


def rss_mb(cluster: Cluster) -> float:
    assert cluster.controller is not None
    return float(psutil.Process(cluster.controller.pid).memory_info().rss) / 1e6


async def watch_flood(cluster: Cluster, extra: list[str]) -> None:
    """A job of 2,000 tasks of 10 KB outputs, watched by 300 streams that never read."""
    async with AsyncClient(cluster.address, timeout_s=60) as client:
        await client.agents(wait_for=1, timeout_s=30)
        before = rss_mb(cluster)
        tasks = [Task(f"t{i}", "blob", {"bytes": 10_000}) for i in range(2000)]
        job = (await client.submit(tasks)).job_id
        await client.wait(job, timeout_s=120)
        after_job = rss_mb(cluster)
        channels = [grpc.aio.insecure_channel(cluster.address) for _ in range(N_STREAMS // 30 + 1)]
        calls = []
        refused = 0
        for i in range(N_STREAMS):
            stub = client_pb2_grpc.JobServiceStub(channels[i % len(channels)])
            calls.append(stub.WatchJob(client_pb2.WatchJobRequest(job_id=job)))
        for _ in range(8):
            await asyncio.sleep(1)
            print(f"  rss {rss_mb(cluster):.0f} MB")
        peak = rss_mb(cluster)
        for call in calls:
            if call.done() and await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused += 1
            call.cancel()
        for ch in channels:
            await ch.close()
        print(
            f"watch: before {before:.0f} MB, after the job {after_job:.0f} MB, after 8 s of "
            f"{N_STREAMS} unread streams {peak:.0f} MB (+{peak - after_job:.0f} MB); "
            f"refused {refused}"
        )


async def jobs_flood(cluster: Cluster, extra: list[str]) -> None:
    """Jobs of 1,000 small tasks submitted with no agent to run them, until refused (or 400)."""
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        stub = client_pb2_grpc.JobServiceStub(channel)
        before = rss_mb(cluster)
        accepted = 0
        for j in range(400):
            request = client_pb2.SubmitJobRequest(
                tasks=[
                    common_pb2.TaskSpec(id=f"t{i}", handler="nobody", payload=b'{"q": 1}')
                    for i in range(1000)
                ]
            )
            try:
                await stub.SubmitJob(request, timeout=60)
            except grpc.aio.AioRpcError as e:
                print(f"  job {j}: {e.code().name}: {e.details()}")
                break
            accepted += 1000
        after = rss_mb(cluster)
        print(
            f"jobs: {accepted} unfinished tasks accepted: {before:.0f} -> {after:.0f} MB "
            f"({(after - before) * 1e6 / max(1, accepted):.0f} bytes a task)"
        )


async def metrics_flood(cluster: Cluster, extra: list[str]) -> None:
    """20,000 tasks each naming a unique handler (no agent has it), and 20,000 run with a
    unique rate key each; then one /metrics scrape, timed, and a gRPC call during it."""
    async with AsyncClient(cluster.address, timeout_s=120) as client:
        await client.agents(wait_for=1, timeout_s=30)
        before = rss_mb(cluster)
        for j in range(20):
            bad = [Task(f"h{i}", f"nobody-{j}-{i}") for i in range(1000)]
            keyed = [
                Task(f"k{i}", "blob", {"bytes": 10}, rate_keys=[f"user-{j}-{i}"])
                for i in range(1000)
            ]
            for tasks in (bad, keyed):
                job = (await client.submit(tasks)).job_id
                await client.wait(job, timeout_s=300)
        after = rss_mb(cluster)
        async with aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            scrape = asyncio.ensure_future(session.get(f"http://127.0.0.1:{HTTP_PORT}/metrics"))
            await asyncio.sleep(0.01)
            t1 = time.monotonic()
            await client.stats()
            rpc_s = time.monotonic() - t1
            async with await scrape as resp:
                body = await resp.read()
            scrape_s = time.monotonic() - t0
        sizes: dict[str, int] = {}
        for line in body.decode().splitlines():
            if not line.startswith("#"):
                name = line.split("{")[0].split(" ")[0]
                sizes[name] = sizes.get(name, 0) + len(line) + 1
        for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {name}: {size} bytes")
        print(
            f"metrics: rss {before:.0f} -> {after:.0f} MB; one scrape {len(body)} bytes in "
            f"{scrape_s:.2f} s; a gRPC call during it took {rpc_s:.2f} s"
        )


async def outputs_flood(cluster: Cluster, extra: list[str]) -> None:
    """60 jobs one after another, each one task returning 16 MB, each read whole by the
    client (as ``deerflow bench inputs`` does): what the finished jobs leave in memory."""
    async with AsyncClient(cluster.address, timeout_s=120) as client:
        await client.agents(wait_for=1, timeout_s=30)
        before = rss_mb(cluster)
        peak = before
        ids = []
        for j in range(60):
            job = await client.submit([Task("p", "blob", {"bytes": 16_000_000, "seed": str(j)})])
            results = await job.wait(timeout_s=120)
            assert results["p"].ok, results["p"].error
            ids.append(job.job_id)
            peak = max(peak, rss_mb(cluster))
        kept = 0
        for job_id in ids:
            try:
                await client.get_job(job_id)
                kept += 1
            except Exception:
                pass
        print(f"  {kept} of the 60 jobs still kept")
        print(
            f"outputs: 60 jobs of a 16 MB output: rss {before:.0f} -> {rss_mb(cluster):.0f} MB "
            f"(peak {peak:.0f} MB)"
        )


FLOODS = {
    "outputs": outputs_flood,
    "watch": watch_flood,
    "jobs": jobs_flood,
    "metrics": metrics_flood,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HTTP_PORT = free_port()


async def main(which: str, extra: list[str]) -> None:
    extra = ["--http-port", str(HTTP_PORT), *extra]
    async with Cluster(1, agent_args=AGENT_ARGS, controller_args=extra) as cluster:
        t0 = time.monotonic()
        await FLOODS[which](cluster, extra)
        print(f"  ({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
