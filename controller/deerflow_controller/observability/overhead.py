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
    from deerflow_controller.observability import tracing_overhead
    print(run(tracing_overhead(tasks=20000, agents=2, slots=64, prefetch=64, rounds=3)))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psutil

from ..bench import NOOP_TARGET_PER_S, machine
from ..client import AsyncClient, Task
from ..launcher import Cluster
from .receiver import READY_PREFIX

TARGET_SLOWDOWN = 0.15
EXPORT_BATCH = 4096
"""``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` of the traced daemons (the SDK's default is 512): 4,096
spans of about 280 bytes make a 1.1 MiB request, within a collector's 4 MiB limit, and an
eighth of the Export calls, which cost both sides (the receiver shares these 2 cores)."""


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


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and its children, by role."""
    me = psutil.Process()
    t = me.cpu_times()
    out = {"client": t.user + t.system}
    for child in me.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            t = child.cpu_times()
        except psutil.Error:
            continue
        role = (
            "controller"
            if "deerflow_controller.main" in cmd
            else "agents"
            if "deerflow_agent" in cmd
            else "receiver"
            if "receiver" in cmd
            else "other"
        )
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


async def _noop_round(
    tasks: int, agents: int, slots: int, prefetch: int, tracer_provider: Any
) -> tuple[float, dict[str, float]]:
    """Seconds from submit to the last result, and the CPU seconds each role spent then."""
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
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        job = await client.submit(work, name="bench-noop")
        done = 0
        async for _ in job.results():
            done += 1
        seconds = time.perf_counter() - started
        cpu_after = _cpu_seconds()
    if done != tasks:
        raise RuntimeError(f"only {done} of {tasks} results arrived")
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
    return seconds, cpu


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _ReceiverProcess:
    """The receiver in a process of its own, as a collector would be: its work is not mixed
    into the client's process, and no gRPC threads exist here when the cluster forks."""

    def __init__(self, proc: asyncio.subprocess.Process, endpoint: str) -> None:
        self.proc = proc
        self.endpoint = endpoint

    @classmethod
    async def start(cls) -> _ReceiverProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from deerflow_controller.observability.receiver import main; main()",
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

    async def stop(self) -> dict[str, int]:
        """Close its stdin; return what it received."""
        out, _ = await asyncio.wait_for(self.proc.communicate(b""), 60)
        counts: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return counts


def _median_by_role(rounds: list[dict[str, float]]) -> dict[str, float]:
    roles = sorted({r for cpu in rounds for r in cpu})
    return {r: round(statistics.median(cpu.get(r, 0.0) for cpu in rounds), 3) for r in roles}


async def tracing_overhead(
    tasks: int = 20000,
    agents: int = 2,
    slots: int = 64,
    prefetch: int = 64,
    rounds: int = 3,
    export_batch: int = EXPORT_BATCH,
) -> dict[str, Any]:
    """Run ``rounds`` untraced and ``rounds`` traced no-op benchmarks, alternating; return one
    JSON-ready dict: seconds per round, medians, ``slowdown`` (traced median / untraced median
    - 1) against the 15 % target, ``paired_slowdown`` (the median of each traced round over the
    untraced one before it, - 1) and the spans each traced round delivered."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    off: list[float] = []
    on: list[float] = []
    off_cpu: list[dict[str, float]] = []
    on_cpu: list[dict[str, float]] = []
    spans: list[int] = []
    expected = 2 * tasks + 1
    for _ in range(rounds):
        seconds, cpu = await _noop_round(tasks, agents, slots, prefetch, None)
        off.append(seconds)
        off_cpu.append(cpu)
        receiver = await _ReceiverProcess.start()
        provider = TracerProvider(resource=Resource.create({"service.name": "deerflow-bench"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
        )
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_MAX_QUEUE_SIZE": str(expected + 4096),
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(export_batch),
        }
        try:
            with _environ(env):
                seconds, cpu = await _noop_round(tasks, agents, slots, prefetch, provider)
                on.append(seconds)
                on_cpu.append(cpu)
        finally:
            # The daemons flushed their spans on exit; the client's goes now.
            await asyncio.to_thread(provider.shutdown)
            spans.append((await receiver.stop())["spans"])
    off_s, on_s = statistics.median(off), statistics.median(on)
    slowdown = on_s / off_s - 1
    # Each traced round against the untraced round just before it: drift of a shared machine
    # over the run cancels within a pair (reported beside the medians' ratio, not instead).
    paired = statistics.median(b / a for a, b in zip(off, on, strict=True)) - 1
    return {
        "workload": "tracing_overhead",
        "tasks": tasks,
        "rounds": rounds,
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
        "expected_spans_per_traced_round": expected,
        "ideal_basis": f"tasks / {NOOP_TARGET_PER_S:g} per s (the no-op target rate)",
        "machine": machine(),
    }
