"""Local clusters on loopback for the benchmarks, the demo and the tests: a controller (or several
campaigning on etcd), its agents and the provider simulator, each a real process of this
interpreter stopped by its own pid
(:class:`deerflow_controller.service.launcher.ManagedProcess`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deerflow_common.backoff import NO_JITTER, Backoff
from deerflow_common.tls import CertificateDir, TlsFiles, aio_channel
from deerflow_controller.service.launcher import AgentProcess, ManagedProcess

READY_PREFIX = "deerflow-controller listening on "
SIM_READY_PREFIX = "deerflow-sim listening on "


class ControllerProcess(ManagedProcess):
    """``deerflow-controller`` on a free loopback port; ``address`` is read from its ready line."""

    address: str = ""

    @classmethod
    async def start(
        cls,
        args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        quiet: bool = True,
        ready_timeout_s: float = 30.0,
        wrapper: Sequence[str] = (),
    ) -> ControllerProcess:
        """Blocks until the controller listens; raises RuntimeError (the process stopped) when
        it exits first, TimeoutError when it stays silent for ``ready_timeout_s``. ``wrapper``:
        see ``ManagedProcess.spawn``."""
        # Launched controllers serve no HTTP unless asked: many run side by side, and the
        # daemon's default dashboard port would be contended.
        http = [] if any(a.startswith("--http-port") for a in args) else ["--http-port", "0"]
        module_args = ["--host", host, "--port", "0", *http, *args]
        self = await cls.spawn(
            "deerflow-controller",
            "deerflow_controller.main",
            module_args,
            quiet=quiet,
            piped=True,
            wrapper=wrapper,
        )
        self.address = await self._await_ready_line(READY_PREFIX, ready_timeout_s)
        return self


class SimulatorProcess(ManagedProcess):
    """The provider simulator on a free loopback port; ``url`` is read from its ready line."""

    url: str = ""

    @classmethod
    async def start(
        cls, args: Sequence[str] = (), *, quiet: bool = True, ready_timeout_s: float = 30.0
    ) -> SimulatorProcess:
        """Blocks until the simulator listens; fails as :meth:`ControllerProcess.start` does."""
        module_args = ["--host", "127.0.0.1", "--port", "0", *args]
        self = await cls.spawn(
            "deerflow-sim", "deerflow_simulator", module_args, quiet=quiet, piped=True
        )
        self.url = await self._await_ready_line(SIM_READY_PREFIX, ready_timeout_s)
        return self


class _LocalProcesses:
    """Processes started on entering (``start``), every one stopped on exit, and at once when
    starting one of them fails."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class Cluster(_LocalProcesses):
    """A controller plus ``agents`` agent processes, as an async context manager."""

    def __init__(
        self,
        agents: int = 2,
        *,
        agent_args: Sequence[str] = (),
        controller_args: Sequence[str] = (),
        quiet: bool = True,
        agent_env: Mapping[str, str] | None = None,
        tls: CertificateDir | None = None,
        mutual_tls: bool = False,
        controller_wrapper: Sequence[str] = (),
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.agent_env = dict(agent_env or {})
        self.controller_wrapper = list(controller_wrapper)
        """A command the controller's interpreter runs under (see ``ManagedProcess.spawn``)."""
        self.ready_timeout_s = ready_timeout_s
        self.n_agents = agents
        self.agent_args = list(agent_args)
        self.controller_args = list(controller_args)
        self.tls = tls
        """Certificates made by ``deerflow certs`` (``make_certificates``): the controller
        serves TLS with them (requiring client certificates with ``mutual_tls``), agents get
        the CA and their own certificate (``agent-<id>.pem``, else ``client.pem``), and
        :attr:`client_tls` is what an SDK client needs."""
        if tls is not None:
            self.controller_args += _controller_tls_args(tls, mutual_tls)
        self.quiet = quiet
        self.controller: ControllerProcess | None = None
        self.agents: list[AgentProcess] = []

    @property
    def address(self) -> str:
        assert self.controller is not None
        return self.controller.address

    async def start(self) -> None:
        self.controller = await ControllerProcess.start(
            self.controller_args,
            quiet=self.quiet,
            ready_timeout_s=self.ready_timeout_s,
            wrapper=self.controller_wrapper,
        )
        for i in range(self.n_agents):
            await self.add_agent(f"agent-{i + 1}")

    async def add_agent(
        self, agent_id: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None
    ) -> AgentProcess:
        """Start one more agent: the cluster's agent arguments and environment, then ``args``
        and ``env`` (which win)."""
        tls = [] if self.tls is None else _agent_tls_args(self.tls, agent_id)
        agent = await AgentProcess.start(
            self.address,
            agent_id,
            [*tls, *self.agent_args, *args],
            quiet=self.quiet,
            env={**self.agent_env, **(env or {})},
        )
        self.agents.append(agent)
        return agent

    @property
    def client_tls(self) -> TlsFiles | None:
        """The SDK's ``tls=`` for this cluster (None: plaintext)."""
        return None if self.tls is None else self.tls.client()

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)
        if self.controller is not None:
            await self.controller.stop()


def _controller_tls_args(tls: CertificateDir, mutual: bool) -> list[str]:
    files = tls.controller(mutual=mutual)
    args = ["--tls-cert", str(files.cert), "--tls-key", str(files.key)]
    return [*args, "--tls-client-ca", str(files.ca)] if files.ca is not None else args


def _agent_tls_args(tls: CertificateDir, agent_id: str) -> list[str]:
    files = tls.agent(agent_id)
    if files.cert is None or not files.cert.exists():
        files = tls.client()
    return ["--tls-ca", str(files.ca), "--tls-cert", str(files.cert), "--tls-key", str(files.key)]


async def wait_serving(address: str, *, serving: bool = True, tls: TlsFiles | None = None) -> None:
    """Block until the controller at ``address`` reports SERVING (or, with ``serving=False``,
    anything else) on gRPC health; follows the health Watch stream, so no polling. Cancel it to
    stop waiting. ``tls``: the client's files for a TLS controller."""
    want = health_pb2.HealthCheckResponse.SERVING
    async with aio_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        backoff = Backoff(0.05, 0.5, jitter=NO_JITTER)
        while True:
            try:
                async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                    if (reply.status == want) == serving:
                        return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(backoff.delay())  # not up yet, or restarting: look again


class HaCluster(_LocalProcesses):
    """Controllers campaigning on etcd plus agents registered there (the HA mode of #3), as an
    async context manager. ``leader()`` waits for the controller that serves."""

    def __init__(
        self,
        etcd: str,
        *,
        prefix: str = "/deerflow/",
        controllers: int = 2,
        agents: int = 2,
        agent_args: Sequence[str] = (),
        controller_args: Sequence[str] = (),
        quiet: bool = True,
        tls: CertificateDir | None = None,
        mutual_tls: bool = False,
    ) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.n_controllers = controllers
        self.n_agents = agents
        self.agent_args = list(agent_args)
        self.controller_args = list(controller_args)
        self.tls = tls
        """As :class:`Cluster`'s: every controller serves TLS with these certificates."""
        if tls is not None:
            self.controller_args += _controller_tls_args(tls, mutual_tls)
        self.quiet = quiet
        self.controllers: list[ControllerProcess] = []
        self.agents: list[AgentProcess] = []

    @property
    def addresses(self) -> str:
        """Every controller's address, comma-separated: what clients and agents are given."""
        return ",".join(c.address for c in self.controllers)

    def etcd_args(self, etcd: str | None = None) -> list[str]:
        return ["--etcd", etcd or self.etcd, "--etcd-prefix", self.prefix]

    async def start(self) -> None:
        for _ in range(self.n_controllers):
            await self.add_controller()
        if self.controllers:
            await self.leader()
        for i in range(self.n_agents):
            await self.add_agent(f"agent-{i + 1}")

    async def add_controller(self, args: Sequence[str] = ()) -> ControllerProcess:
        controller = await ControllerProcess.start(
            [*self.etcd_args(), *self.controller_args, *args], quiet=self.quiet
        )
        self.controllers.append(controller)
        return controller

    async def restart_controller(self, dead: ControllerProcess) -> ControllerProcess:
        """Start a controller on the port ``dead`` (stopped, or exited) listened on, in its
        place in ``controllers``, so ``addresses`` stays what clients and agents were given.
        Blocks until it listens; it campaigns like any other."""
        await dead.stop()
        port = dead.address.rpartition(":")[2]
        controller = await ControllerProcess.start(
            [*self.etcd_args(), *self.controller_args, "--port", port], quiet=self.quiet
        )
        self.controllers[self.controllers.index(dead)] = controller
        return controller

    async def restart_agent(self, dead: AgentProcess, args: Sequence[str] = ()) -> AgentProcess:
        """Start an agent with the id of ``dead`` (stopped, or exited), in its place in
        ``agents``."""
        await dead.stop()
        agent = await AgentProcess.start(
            self.addresses,
            dead.name,
            [*self._agent_tls(dead.name), *self.etcd_args(), *self.agent_args, *args],
            quiet=self.quiet,
        )
        self.agents[self.agents.index(dead)] = agent
        return agent

    async def add_agent(
        self, agent_id: str, args: Sequence[str] = (), *, etcd: str | None = None
    ) -> AgentProcess:
        agent = await AgentProcess.start(
            self.addresses,
            agent_id,
            [*self._agent_tls(agent_id), *self.etcd_args(etcd), *self.agent_args, *args],
            quiet=self.quiet,
        )
        self.agents.append(agent)
        return agent

    async def leader(self, timeout_s: float = 30.0) -> ControllerProcess:
        """The controller that reports SERVING (waits for one, among the live ones)."""
        live = [c for c in self.controllers if c.returncode is None]
        tls = self.client_tls
        waits = {asyncio.ensure_future(wait_serving(c.address, tls=tls)): c for c in live}
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()
        if not done:
            raise TimeoutError(f"no controller became the leader within {timeout_s:g} s")
        return waits[next(iter(done))]

    def _agent_tls(self, agent_id: str) -> list[str]:
        return [] if self.tls is None else _agent_tls_args(self.tls, agent_id)

    @property
    def client_tls(self) -> TlsFiles | None:
        """The SDK's ``tls=`` for this cluster (None: plaintext)."""
        return None if self.tls is None else self.tls.client()

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in self.controllers), return_exceptions=True)
