"""What tracing costs: the no-op benchmark (``deerflow bench noop``'s workload and timing) with
every task traced and exported to a local OTLP receiver, against tracing off, in alternating
rounds so that drift on a shared machine hits both sides alike.

Traced rounds: the client exports its submit span through an SDK TracerProvider, and the
controller and agents get ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at the receiver (a queue
large enough that no span is dropped). Each traced round is checked afterwards: the receiver
must hold one client span plus one controller and one agent span per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..bench import NOOP_TARGET_PER_S, machine
from ..client import AsyncClient, Task
from ..launcher import Cluster
from .receiver import OtlpReceiver

TARGET_SLOWDOWN = 0.15


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
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


async def _noop_round(
    tasks: int, agents: int, slots: int, prefetch: int, tracer_provider: Any
) -> float:
    work = [Task(f"t{i}", "echo", f"{i:08d}".encode()) for i in range(tasks)]
    async with (
        Cluster(
            agents,
            agent_args=["--slots", str(slots)],
            controller_args=["--prefetch", str(prefetch)],
        ) as cluster,
        AsyncClient(cluster.address, timeout_s=60, tracer_provider=tracer_provider) as client,
    ):
        await client.agents(wait_for=agents, timeout_s=30)
        started = time.perf_counter()
        job = await client.submit(work, name="bench-noop")
        done = 0
        async for _ in job.results():
            done += 1
        seconds = time.perf_counter() - started
    if done != tasks:
        raise RuntimeError(f"only {done} of {tasks} results arrived")
    return seconds


async def tracing_overhead(
    tasks: int = 20000, agents: int = 2, slots: int = 64, prefetch: int = 64, rounds: int = 3
) -> dict[str, Any]:
    """Run ``rounds`` untraced and ``rounds`` traced no-op benchmarks, alternating; return one
    JSON-ready dict: seconds per round, medians, ``slowdown`` (traced median / untraced median
    - 1) against the 15 % target, and the spans each traced round delivered."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    off: list[float] = []
    on: list[float] = []
    spans: list[int] = []
    expected = 2 * tasks + 1
    async with OtlpReceiver() as receiver:
        provider = TracerProvider(resource=Resource.create({"service.name": "deerflow-bench"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
        )
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_MAX_QUEUE_SIZE": str(expected + 4096),
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
        try:
            for _ in range(rounds):
                off.append(await _noop_round(tasks, agents, slots, prefetch, None))
                receiver.clear()
                with _environ(env):
                    on.append(await _noop_round(tasks, agents, slots, prefetch, provider))
                # The daemons flushed on exit; the client's span goes from the SDK's thread to
                # the receiver on this loop, so flush it off the loop.
                await asyncio.to_thread(provider.force_flush)
                got = await receiver.wait_for_spans(expected, 30.0)
                spans.append(len(got))
        finally:
            await asyncio.to_thread(provider.shutdown)
    off_s, on_s = statistics.median(off), statistics.median(on)
    slowdown = on_s / off_s - 1
    return {
        "workload": "tracing_overhead",
        "tasks": tasks,
        "rounds": rounds,
        "agents": agents,
        "slots": slots,
        "prefetch": prefetch,
        "off_seconds": [round(s, 4) for s in off],
        "on_seconds": [round(s, 4) for s in on],
        "off_tasks_per_s": round(tasks / off_s, 1),
        "on_tasks_per_s": round(tasks / on_s, 1),
        "slowdown": round(slowdown, 4),
        "target_slowdown": TARGET_SLOWDOWN,
        "meets_target": slowdown <= TARGET_SLOWDOWN,
        "spans_per_traced_round": spans,
        "expected_spans_per_traced_round": expected,
        "ideal_basis": f"tasks / {NOOP_TARGET_PER_S:g} per s (the no-op target rate)",
        "machine": machine(),
    }
