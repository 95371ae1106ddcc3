"""``deerflow bench latency``: one-task echo jobs, submit to result, at idle and under load.

Per job (client and controller share this machine's wall clock): ``submit_to_start`` from the
client's submit call to the controller's DISPATCHED event (the agent starts an echo within
microseconds of receiving it; its own RUNNING report is folded into the result for attempts this
short), ``start_to_result`` from there to the terminal event arriving at the client, and
``round_trip`` from submit to result at the client. The load is a separate process submitting
jobs of ``load_job_size`` tasks at ``load_fraction`` of the capacity measured first.

At idle, the round trip is also taken the ways DeerFlow calls (``idle_paths``): ``client_run``,
``AsyncClient.run`` of one task (what an async caller awaits); ``dropin_run_task``, the drop-ins'
blocking ``ClusterConnection.run_task`` (every DeerFlow tool and chat-model call), from a thread.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import statistics
import time
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import psutil

from deerflow_common import run
from deerflow_controller.client import AsyncClient, Client, Task

from ._launcher import Cluster
from ._throughput import machine


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(seconds: list[float]) -> dict[str, float]:
    """p50 and p99 of ``seconds``, in milliseconds."""
    values = [x * 1000 for x in seconds]
    return {"p50": round(statistics.median(values), 3), "p99": round(_pct(values, 0.99), 3)}


def _summary(samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": len(samples)}
    for i, name in enumerate(("submit_to_start", "start_to_result", "round_trip")):
        out[f"{name}_ms"] = _ms([s[i] for s in samples])
    return out


async def _one(client: AsyncClient, i: int) -> tuple[float, float, float]:
    t0 = time.time()
    # The result stream opens together with the submit (not after its reply).
    job = await client.submit([Task("t", "echo", b"x")], watch="events")
    dispatched = 0.0
    async for ev in job.events():
        if ev.state == "DISPATCHED" and not dispatched:
            dispatched = ev.time
        if ev.terminal:
            t1 = time.time()
            return dispatched - t0, t1 - dispatched, t1 - t0
    raise RuntimeError("the job ended without a terminal event")


async def _samples(client: AsyncClient, n: int) -> list[tuple[float, float, float]]:
    for i in range(min(20, n)):  # warm-up, not recorded
        await _one(client, -i - 1)
    return [await _one(client, i) for i in range(n)]


async def _run_samples(client: AsyncClient, n: int) -> list[float]:
    """Round trips (seconds) of ``AsyncClient.run`` of one echo task, after a warm-up."""

    async def one() -> float:
        t0 = time.perf_counter()
        await client.run([Task("t", "echo", b"x")])
        return time.perf_counter() - t0

    for _ in range(min(20, n)):
        await one()
    return [await one() for _ in range(n)]


def _dropin_samples(address: str, n: int) -> list[float]:
    """Round trips (seconds) of the drop-ins' blocking ``run_task`` of one echo task (blocks:
    call it from a thread)."""
    from deerflow_dropins._cluster import ClusterConnection

    conn = ClusterConnection(address)
    try:

        def one() -> float:
            t0 = time.perf_counter()
            conn.run_task(Task("t", "echo", b"x"))
            return time.perf_counter() - t0

        for _ in range(min(20, n)):
            one()
        return [one() for _ in range(n)]
    finally:
        conn.close()


def _sync_client_samples(address: str, n: int) -> list[float]:
    """Round trips (seconds) of the blocking ``Client.run`` of one echo task (blocks: call it
    from a thread): DeerFlow's synchronous callers of the SDK itself."""
    with Client(address, timeout_s=60) as client:

        def one() -> float:
            t0 = time.perf_counter()
            client.run([Task("t", "echo", b"x")])
            return time.perf_counter() - t0

        for _ in range(min(20, n)):
            one()
        return [one() for _ in range(n)]


def _round_trips(samples: list[float]) -> dict[str, Any]:
    return {"samples": len(samples), "round_trip_ms": _ms(samples)}


async def _capacity(client: AsyncClient, tasks: int) -> float:
    started = time.perf_counter()
    job = await client.submit([Task(f"c{i}", "echo", b"x") for i in range(tasks)])
    await job.wait()
    return tasks / (time.perf_counter() - started)


def _load_main(address: str, rate: float, job_size: int, stop: MpEvent, done: Any) -> None:
    async def main() -> None:
        pending: set[asyncio.Task[Any]] = set()
        async with AsyncClient(address, timeout_s=120) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            period = job_size / rate
            k = 0
            while not stop.is_set():
                job = await client.submit([Task(f"l{i}", "echo", b"x") for i in range(job_size)])
                pending.add(t := asyncio.create_task(job.wait()))
                t.add_done_callback(pending.discard)
                k += 1
                await asyncio.sleep(max(0.0, started + k * period - loop.time()))
            elapsed = loop.time() - started
            await asyncio.gather(*pending)
        done.put(k * job_size / elapsed)  # the submitted rate

    run(main())


async def latency(
    samples: int, agents: int, slots: int, load_fraction: float, load_job_size: int
) -> dict[str, Any]:
    async with (
        Cluster(agents, agent_args=["--slots", str(slots)]) as cluster,
        AsyncClient(cluster.address, timeout_s=60) as client,
    ):
        await client.agents(wait_for=agents, timeout_s=30)
        load_before = psutil.getloadavg()
        idle = _summary(await _samples(client, samples))
        idle_paths = {
            "client_run": _round_trips(await _run_samples(client, samples)),
            "sync_client_run": _round_trips(
                await asyncio.to_thread(_sync_client_samples, cluster.address, samples)
            ),
            "dropin_run_task": _round_trips(
                await asyncio.to_thread(_dropin_samples, cluster.address, samples)
            ),
        }
        capacity = await _capacity(client, 20000)
        ctx = multiprocessing.get_context("spawn")
        stop, done = ctx.Event(), ctx.Queue()
        rate = capacity * load_fraction
        proc = ctx.Process(
            target=_load_main, args=(cluster.address, rate, load_job_size, stop, done)
        )
        proc.start()
        try:
            await asyncio.sleep(1.0)  # the load reaches its rate
            loaded = _summary(await _samples(client, samples))
        finally:
            stop.set()
            try:
                achieved = await asyncio.to_thread(done.get, True, 120)
            except queue.Empty:  # the load process died (its traceback is on stderr)
                achieved = -1.0
            await asyncio.to_thread(proc.join, 30)
            if proc.is_alive():
                proc.kill()
    return {
        "workload": "latency",
        "idle": idle,
        "idle_paths": idle_paths,
        "loaded": {**loaded, "load_target_per_s": round(rate, 1)},
        "load_achieved_per_s": round(float(achieved), 1),
        "capacity_tasks_per_s": round(capacity, 1),
        "load_fraction": load_fraction,
        "load_job_size": load_job_size,
        "loadavg_1m_before_after": [round(load_before[0], 2), round(psutil.getloadavg()[0], 2)],
        "agents": agents,
        "slots": slots,
        "machine": machine(),
    }
