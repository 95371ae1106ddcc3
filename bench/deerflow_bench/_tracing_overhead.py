"""What tracing costs: the no-op benchmark (``deerflow bench noop``'s workload and timing) with
every task traced and exported to a local OTLP receiver, against tracing off, in alternating
rounds so that drift on a shared machine hits both sides alike.

Traced rounds: a real OTLP/gRPC receiver runs in a process of its own; the client exports its
submit span through an SDK TracerProvider, and the controller and agents get
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at the receiver (a queue large enough that no span is
dropped). Each traced round is checked afterwards: the receiver must hold one client span plus
one controller and one agent span per task (``spans_per_traced_round``).

Besides the seconds, each round records the CPU seconds each role spent in the timed part
(client, controller, agents, receiver; medians in ``off_cpu_seconds`` / ``on_cpu_seconds``):
on a shared machine the wall-clock slowdown swings with other work, the CPU added per task
much less.

    from deerflow_common import run
    from deerflow_bench import tracing_overhead
    print(run(tracing_overhead(tasks=20000, agents=2, slots=64, prefetch=64, rounds=3)))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psutil

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster
from ._otlp_receiver import READY_PREFIX
from ._throughput import NOOP_TARGET_PER_S, machine

TARGET_SLOWDOWN = 0.15
EXPORT_BATCH = 4096
"""``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` of the traced daemons (the SDK's default is 512): 4,096
spans of about 280 bytes make a 1.1 MiB request, within a collector's 4 MiB limit, and an
eighth of the Export calls, which cost both sides (the receiver shares these 2 cores)."""


@contextlib.contextmanager
def extra_environ(extra: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the processes started inside (the launcher copies
    os.environ), then restore them."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cpu_of(pids: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process ("client") and of the given
    processes, by role."""
    t = psutil.Process().cpu_times()
    out = {"client": t.user + t.system}
    for role, group in pids.items():
        total = 0.0
        for pid in group:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
        out[role] = total
    return out


class _Side:
    """One of the two clusters (traced or not) with its client, kept for every round."""

    def __init__(
        self, cluster: Cluster, client: AsyncClient, traced: bool, receiver_pid: int | None
    ) -> None:
        self.cluster = cluster
        self.client = client
        self.traced = traced
        assert cluster.controller is not None
        self.pids: dict[str, list[int]] = {
            "controller": [cluster.controller.pid],
            "agents": [a.pid for a in cluster.agents],
        }
        if receiver_pid is not None:
            self.pids["receiver"] = [receiver_pid]

    async def job(self, tasks: int, name: str) -> tuple[float, dict[str, float]]:
        """Seconds from submit to the last result of one no-op job, and the CPU seconds each
        role spent then."""
        work = [Task(f"t{i}", "echo", f"{i:08d}".encode()) for i in range(tasks)]
        cpu_before = _cpu_of(self.pids)
        started = time.perf_counter()
        job = await self.client.submit(work, name=name)
        done = 0
        async for _ in job.results():
            done += 1
        seconds = time.perf_counter() - started
        cpu_after = _cpu_of(self.pids)
        if done != tasks:
            raise RuntimeError(f"only {done} of {tasks} results arrived")
        return seconds, {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}


class ReceiverProcess:
    """The receiver in a process of its own, as a collector would be: its work is not mixed
    into the client's process, and no gRPC threads exist here when the clusters fork."""

    def __init__(self, proc: asyncio.subprocess.Process, endpoint: str) -> None:
        self.proc = proc
        self.endpoint = endpoint

    @classmethod
    async def start(cls) -> ReceiverProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from deerflow_bench._otlp_receiver import main; main()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if not line.startswith(READY_PREFIX):
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"the OTLP receiver did not start: {line!r}")
        return cls(proc, line[len(READY_PREFIX) :])

    async def wait_for(self, spans: int) -> int:
        """Wait until ``spans`` spans arrived in all (the receiver gives up after 60 s);
        return how many did."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"wait {spans}\n".encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 90)
        count: int = json.loads(line.decode())["spans"]
        return count

    async def stop(self) -> dict[str, int]:
        """Close its stdin; return what it received."""
        out, _ = await asyncio.wait_for(self.proc.communicate(b""), 60)
        counts: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return counts


def traced_env(endpoint: str, spans_per_job: int, export_batch: int) -> dict[str, str]:
    """The environment of a traced daemon of the benchmarks: export to ``endpoint``, with a
    queue that holds a whole job's spans (none dropped) and batches of ``export_batch``."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_MAX_QUEUE_SIZE": str(spans_per_job + 4096),
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(export_batch),
    }


def _median_by_role(rounds: list[dict[str, float]]) -> dict[str, float]:
    roles = sorted({r for cpu in rounds for r in cpu})
    return {r: round(statistics.median(cpu.get(r, 0.0) for cpu in rounds), 3) for r in roles}


async def tracing_overhead(
    tasks: int = 20000,
    agents: int = 2,
    slots: int = 64,
    prefetch: int = 64,
    rounds: int = 15,
    export_batch: int = EXPORT_BATCH,
    warmup: int = 1,
) -> dict[str, Any]:
    """Run ``rounds`` untraced and ``rounds`` traced no-op jobs of ``tasks`` tasks on two
    clusters started once (after ``warmup`` jobs each, not counted), alternating A-B then B-A;
    return one JSON-ready dict: seconds per job, medians, ``slowdown`` (traced median /
    untraced median - 1) against the 15 % target, ``paired_slowdown`` (the median over rounds
    of traced / untraced - 1) and the spans each traced job delivered."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    off: list[float] = []
    on: list[float] = []
    off_cpu: list[dict[str, float]] = []
    on_cpu: list[dict[str, float]] = []
    spans: list[int] = []
    per_job = 2 * tasks + 1
    cluster_args: dict[str, Any] = {
        "agent_args": ["--slots", str(slots)],
        "controller_args": ["--prefetch", str(prefetch)],
    }
    receiver = await ReceiverProcess.start()
    provider = TracerProvider(resource=Resource.create({"service.name": "deerflow-bench"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
    )
    env = traced_env(receiver.endpoint, per_job, export_batch)
    try:
        async with contextlib.AsyncExitStack() as stack:
            plain_cluster = await stack.enter_async_context(Cluster(agents, **cluster_args))
            with extra_environ(env):
                traced_cluster = await stack.enter_async_context(Cluster(agents, **cluster_args))
            sides = []
            for cluster, traced in ((plain_cluster, False), (traced_cluster, True)):
                client = await stack.enter_async_context(
                    AsyncClient(
                        cluster.address,
                        timeout_s=60,
                        tracer_provider=provider if traced else None,
                    )
                )
                await client.agents(wait_for=agents, timeout_s=30)
                sides.append(_Side(cluster, client, traced, receiver.proc.pid if traced else None))
            received = 0

            async def settle() -> int:
                """Wait until every span of the traced jobs so far arrived (outside the timed
                part: no export of one job overlaps the next); return how many did."""
                await asyncio.to_thread(provider.force_flush)
                return await receiver.wait_for(received)

            for side in sides:
                for _ in range(warmup):
                    await side.job(tasks, "bench-warmup")
                    if side.traced:
                        received += per_job
                        received = await settle()
            for i in range(rounds):
                for side in sides if i % 2 == 0 else sides[::-1]:
                    seconds, cpu = await side.job(tasks, "bench-noop")
                    if side.traced:
                        before = received
                        received += per_job
                        received = await settle()
                        spans.append(received - before)
                        on.append(seconds)
                        on_cpu.append(cpu)
                    else:
                        off.append(seconds)
                        off_cpu.append(cpu)
    finally:
        await asyncio.to_thread(provider.shutdown)
        await receiver.stop()
    off_s, on_s = statistics.median(off), statistics.median(on)
    slowdown = on_s / off_s - 1
    # Each traced job against the untraced job of the same round: drift of a shared machine
    # over the run cancels within a pair (reported beside the medians' ratio, not instead).
    paired = statistics.median(b / a for a, b in zip(off, on, strict=True)) - 1
    return {
        "workload": "tracing_overhead",
        "method": "two warm clusters, one untraced and one traced; jobs alternate A-B, B-A",
        "tasks": tasks,
        "rounds": rounds,
        "warmup_jobs": warmup,
        "agents": agents,
        "slots": slots,
        "prefetch": prefetch,
        "export_batch": export_batch,
        "off_seconds": [round(s, 4) for s in off],
        "on_seconds": [round(s, 4) for s in on],
        "off_tasks_per_s": round(tasks / off_s, 1),
        "on_tasks_per_s": round(tasks / on_s, 1),
        "slowdown": round(slowdown, 4),
        "paired_slowdown": round(paired, 4),
        "off_cpu_seconds": _median_by_role(off_cpu),
        "on_cpu_seconds": _median_by_role(on_cpu),
        "target_slowdown": TARGET_SLOWDOWN,
        "meets_target": slowdown <= TARGET_SLOWDOWN,
        "spans_per_traced_round": spans,
        "expected_spans_per_traced_round": per_job,
        "ideal_basis": f"tasks / {NOOP_TARGET_PER_S:g} per s (the no-op target rate)",
        "machine": machine(),
    }
