"""Fixtures for observability tests: a real OTLP/gRPC receiver in the test process, an SDK
tracer provider for the client exporting to it, and real controller and agent processes with
their HTTP sides on free loopback ports.

Every process a test starts is stopped by the fixture, by its own pid, even when the test fails.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from deerflow_bench import Cluster, OtlpReceiver
from deerflow_controller.client import AsyncClient

PLUGINS_DIR = Path(__file__).parent / "plugins"
CLIENT_SERVICE = "deerflow-test-client"


def free_port() -> int:
    """A port free on loopback now (the OS may hand it out again later: use it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/observability/plugins importable by the agent processes (for --handler)."""
    monkeypatch.setenv("PYTHONPATH", str(PLUGINS_DIR))
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as r:
        yield r


@pytest.fixture
def tracing_env(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, plugin_env: None) -> str:
    """OTEL_* variables for the processes started in the test: export everything to the
    receiver, in small batches soon (never drop: the tests count spans)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100000")
    for name in (
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    return receiver.endpoint


@pytest.fixture
async def client_tracer(receiver: OtlpReceiver) -> AsyncIterator[TracerProvider]:
    """The client's tracer provider (the SDK's own, as DeerFlow would configure it)."""
    provider = TracerProvider(resource=Resource.create({"service.name": CLIENT_SERVICE}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True),
            schedule_delay_millis=50,
            max_queue_size=100000,
        )
    )
    yield provider
    # The exporter's thread sends to the receiver on this loop: never block the loop on it.
    await asyncio.to_thread(provider.shutdown)


@dataclass
class ObsCluster:
    """A cluster whose controller serves HTTP on ``http_port`` (0: off) and whose agents serve
    /metrics on ``agent_ports`` (by agent id)."""

    cluster: Cluster
    http_port: int
    agent_ports: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def client(self, **kwargs: object) -> AsyncClient:
        client = AsyncClient(self.address, timeout_s=30, **kwargs)  # type: ignore[arg-type]
        await client.agents(wait_for=len(self.cluster.agents), timeout_s=30)
        return client


ClusterFactory = Callable[..., Awaitable[ObsCluster]]


@pytest.fixture
async def make_cluster() -> AsyncIterator[ClusterFactory]:
    """``await make_cluster(agents=2, slots=8, http=True, agent_metrics=False)``: a started
    cluster; all are stopped at the end of the test whatever happens."""
    started: list[Cluster] = []

    async def factory(
        agents: int = 2,
        *,
        slots: int = 8,
        http: bool = True,
        agent_metrics: bool = False,
        agent_args: tuple[str, ...] = (),
        controller_args: tuple[str, ...] = (),
    ) -> ObsCluster:
        http_port = free_port() if http else 0
        cluster = Cluster(
            0,
            agent_args=["--slots", str(slots), *agent_args],
            controller_args=["--http-port", str(http_port), *controller_args],
        )
        started.append(cluster)
        await cluster.__aenter__()
        out = ObsCluster(cluster, http_port)
        for i in range(agents):
            agent_id = f"agent-{i + 1}"
            extra: list[str] = []
            if agent_metrics:
                out.agent_ports[agent_id] = free_port()
                extra = ["--metrics-port", str(out.agent_ports[agent_id])]
            await cluster.add_agent(agent_id, extra)
        return out

    yield factory
    for cluster in started:
        await cluster.stop()


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text exposition -> {(name, labels): value}; fails on a malformed line."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m is not None, f"malformed exposition line: {line!r}"
        name, labels, value = m.groups()
        key = (name, frozenset(_LABEL.findall(labels or "")))
        assert key not in out, f"duplicate series: {line!r}"
        out[key] = float(value)
    return out


def sample(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The value of one series (KeyError naming what exists when it is missing)."""
    key = (name, frozenset(labels.items()))
    if key not in metrics:
        have = sorted(str(dict(k[1])) for k in metrics if k[0] == name)
        raise KeyError(f"no {name}{labels}; have {have}")
    return metrics[key]
