"""``deerflow bench sdk``: the blocking :class:`Client` against the :class:`AsyncClient` on one
cluster of no-op (echo) tasks, interleaved round by round.

Modes: ``async`` (one job, results streamed by the async client), ``sync`` (the same through the
blocking client), ``async-concurrent`` (``threads`` coroutines each submitting jobs of
``job_size`` tasks and waiting for them) and ``sync-threads`` (``threads`` threads sharing one
blocking client, each submitting and waiting the same way: DeerFlow's synchronous tools) and
``sync-threads-run`` (the same threads calling ``Client.run``: submit and wait in one thread
crossing).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deerflow_controller.client import AsyncClient, Client, Task

from ._launcher import Cluster
from ._throughput import machine

MODES = ("async", "sync", "async-concurrent", "sync-threads", "sync-threads-run")


def _tasks(prefix: str, n: int) -> list[Task]:
    return [Task(f"{prefix}-{i}", "echo", f"{i:08d}".encode()) for i in range(n)]


async def _async_one_job(client: AsyncClient, tasks: int, tag: str) -> float:
    started = time.perf_counter()
    job = await client.submit(_tasks(tag, tasks), name="bench-sdk")
    n = 0
    async for _ in job.results():
        n += 1
    assert n == tasks
    return time.perf_counter() - started


def _sync_one_job(client: Client, tasks: int, tag: str) -> float:
    started = time.perf_counter()
    job = client.submit(_tasks(tag, tasks), name="bench-sdk")
    n = sum(1 for _ in job.results())
    assert n == tasks
    return time.perf_counter() - started


def _jobs(tasks: int, job_size: int) -> list[int]:
    sizes = [job_size] * (tasks // job_size)
    if tasks % job_size:
        sizes.append(tasks % job_size)
    return sizes


async def _async_concurrent(
    client: AsyncClient, tasks: int, job_size: int, workers: int, tag: str
) -> float:
    sizes = _jobs(tasks, job_size)
    lock = asyncio.Lock()
    next_job = [0]

    async def worker() -> None:
        while True:
            async with lock:
                i = next_job[0]
                next_job[0] += 1
            if i >= len(sizes):
                return
            job = await client.submit(_tasks(f"{tag}-{i}", sizes[i]))
            assert len(await job.wait()) == sizes[i]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


def _sync_threads(
    client: Client, tasks: int, job_size: int, workers: int, tag: str, *, run: bool = False
) -> float:
    sizes = _jobs(tasks, job_size)
    lock = threading.Lock()
    next_job = [0]

    def worker() -> None:
        while True:
            with lock:
                i = next_job[0]
                next_job[0] += 1
            if i >= len(sizes):
                return
            if run:
                assert len(client.run(_tasks(f"{tag}-{i}", sizes[i]))) == sizes[i]
            else:
                job = client.submit(_tasks(f"{tag}-{i}", sizes[i]))
                assert len(job.wait()) == sizes[i]

    started = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="bench-sdk") as pool:
        for f in [pool.submit(worker) for _ in range(workers)]:
            f.result()
    return time.perf_counter() - started


async def sdk(
    tasks: int, agents: int, slots: int, threads: int, job_size: int, rounds: int
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    # CPU of this process (every thread) per task: the SDK's cost, plus building the Tasks.
    cpu_us: dict[str, list[float]] = {m: [] for m in MODES}
    async with (
        Cluster(agents, agent_args=["--slots", str(slots)]) as cluster,
        AsyncClient(cluster.address, timeout_s=120) as aclient,
    ):
        await aclient.agents(wait_for=agents, timeout_s=30)
        sclient = await asyncio.to_thread(Client, cluster.address, timeout_s=120)
        try:
            await _async_one_job(aclient, min(tasks, 2000), "warm")  # connections, caches
            for r in range(rounds):
                for mode in MODES:
                    tag = f"r{r}-{mode}"
                    cpu = time.process_time()
                    if mode == "async":
                        s = await _async_one_job(aclient, tasks, tag)
                    elif mode == "sync":
                        s = await asyncio.to_thread(_sync_one_job, sclient, tasks, tag)
                    elif mode == "async-concurrent":
                        s = await _async_concurrent(aclient, tasks, job_size, threads, tag)
                    else:
                        s = await asyncio.to_thread(
                            _sync_threads,
                            sclient,
                            tasks,
                            job_size,
                            threads,
                            tag,
                            run=mode == "sync-threads-run",
                        )
                    rates[mode].append(round(tasks / s, 1))
                    cpu_us[mode].append(round((time.process_time() - cpu) / tasks * 1e6, 1))
        finally:
            await asyncio.to_thread(sclient.close)
    medians = {m: round(statistics.median(v), 1) for m, v in rates.items()}
    return {
        "workload": "sdk",
        "tasks": tasks,
        "rounds": rounds,
        "tasks_per_s": rates,
        "median_tasks_per_s": medians,
        "sync_over_async": round(medians["sync"] / medians["async"], 3),
        "sync_threads_over_async_concurrent": round(
            medians["sync-threads"] / medians["async-concurrent"], 3
        ),
        "sync_threads_run_over_async_concurrent": round(
            medians["sync-threads-run"] / medians["async-concurrent"], 3
        ),
        "sync_threads_over_async": round(medians["sync-threads"] / medians["async"], 3),
        "client_cpu_us_per_task": cpu_us,
        "threads": threads,
        "job_size": job_size,
        "agents": agents,
        "slots": slots,
        "machine": machine(),
    }
