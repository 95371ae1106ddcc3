"""One real cluster for the drop-ins' tests: a controller, one agent with the opt-in ``python``
handler, and ``deerflow sim`` answering at once over real HTTP as every provider; every process
and the drop-ins' connection export their spans over real OTLP/gRPC to a receiver here.

The processes run on an event loop in a thread of their own for the whole package, so both
blocking tests (``tool.invoke``) and async ones (``ainvoke``) use them, and starting them is
paid once (about 3 s). Every process is stopped by its own pid when the package's tests end.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from deerflow_bench import Cluster, OtlpReceiver, SimulatorProcess
from deerflow_controller.client import AsyncClient
from deerflow_dropins._cluster import ClusterConnection, ClusterSettings

T = TypeVar("T")

SIM_KEY = "sk-dropins-test-key"
CLIENT_SERVICE = "deerflow-dropins-test"
OTEL_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BSP_MAX_QUEUE_SIZE": "100000"}
OTEL_CLEARED = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)
SETTINGS = ClusterSettings(
    tenant="dropins-test",
    llm_account="acct-llm",
    search_account="acct-search",
    crawl_account="acct-crawl",
)


class _Background:
    """An event loop in a daemon thread, to own processes across blocking and async tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class DropinCluster:
    address: str
    sim_url: str
    conn: ClusterConnection
    background: _Background
    receiver: OtlpReceiver
    tracer: TracerProvider

    def rate_key_admitted(self, key: str) -> int:
        """How many tasks the controller's limiter admitted on ``key`` so far."""

        async def admitted() -> int:
            async with AsyncClient(self.address) as client:
                stats = await client.stats(timeout_s=10)
            return sum(int(k.admitted) for k in stats.rate_keys if k.key == key)

        return self.background.run(admitted())


def _tracer(endpoint: str) -> TracerProvider:
    """The DeerFlow process's tracer provider, as DeerFlow would configure one."""
    provider = TracerProvider(resource=Resource.create({"service.name": CLIENT_SERVICE}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            schedule_delay_millis=50,
            max_queue_size=100000,
        )
    )
    return provider


async def _start_cluster(cluster: Cluster, endpoint: str) -> None:
    """Start the daemons with their OTLP exporters pointed at the receiver (the controller
    takes this process's environment, so it is set for the start only)."""
    saved = {name: os.environ.get(name) for name in (*OTEL_ENV, *OTEL_CLEARED)}
    saved["OTEL_EXPORTER_OTLP_ENDPOINT"] = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    os.environ.update(OTEL_ENV, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    for name in OTEL_CLEARED:
        os.environ.pop(name, None)
    try:
        await cluster.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    async with AsyncClient(cluster.address) as client:
        await client.agents(wait_for=1, timeout_s=30)


@pytest.fixture(scope="package")
def dropin_cluster() -> Iterator[DropinCluster]:
    background = _Background()
    receiver = OtlpReceiver()
    background.run(receiver.start())
    sim = background.run(
        SimulatorProcess.start(["--time-scale", "0", "--crawl-empty-rate", "0", "--key", SIM_KEY])
    )
    env = {}
    for provider in ("LLM", "SEARCH", "CRAWL"):
        env[f"DEERFLOW_{provider}_BASE_URL"] = sim.url
        env[f"DEERFLOW_{provider}_API_KEY"] = SIM_KEY
    cluster = Cluster(
        1,
        agent_args=["--slots", "8", "--handler", "deerflow_dropins.handlers:python"],
        agent_env=env,
    )
    tracer = _tracer(receiver.endpoint)
    conn: ClusterConnection | None = None
    try:
        background.run(_start_cluster(cluster, receiver.endpoint))
        conn = ClusterConnection(cluster.address, settings=SETTINGS, tracer_provider=tracer)
        yield DropinCluster(cluster.address, sim.url, conn, background, receiver, tracer)
    finally:
        if conn is not None:
            conn.close()
        tracer.shutdown()
        background.run(cluster.stop())
        background.run(sim.stop())
        background.run(receiver.stop())
        background.close()
