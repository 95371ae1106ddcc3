"""Assemble the controller's gRPC server: job, agent and admin services, standard health
checking and server reflection (so grpcurl and load balancers work)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import signal
import socket
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from deerflow_common import server_options
from deerflow_common.tls import (
    CA_ENV,
    CERT_ENV,
    TlsFiles,
    certificate_identity,
    server_credentials,
    server_ssl_context,
)
from deerflow_controller.config import ControllerConfig
from deerflow_controller.ha import HaConfig
from deerflow_controller.observability import DEFAULT_HTTP_PORT, Observability
from deerflow_controller.service.admin_service import AdminService
from deerflow_controller.service.agent_service import AgentService
from deerflow_controller.service.auth import AuthInterceptor, PeerIdentity
from deerflow_controller.service.credentials import Credentials
from deerflow_controller.service.embedded import LocalAgents
from deerflow_controller.service.exposure import announce, exposure_problem
from deerflow_controller.service.job_service import JobService
from deerflow_controller.service.malformed import MalformedRequestGuard
from deerflow_controller.service.shell import Shell
from deerflow_controller.service.tuner_loop import TunerLoop
from deerflow_controller.tuning import Mode, Tuner
from deerflow_protos import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
)

if TYPE_CHECKING:
    from deerflow_controller.ha import HaRunner, LeaderGate

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    client_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


class ListenError(OSError):
    """A port the controller was told to use cannot be bound; the message names the address
    and the flag that changes it."""


GRPC_FLAGS = ("--port (0 picks a free one)", "--host")
HTTP_FLAGS = ("--http-port (0 turns HTTP off)", "--http-host")


def _cannot_bind(what: str, host: str, port: int, e: OSError, flags: tuple[str, str]) -> str:
    """One sentence: the address, the reason in the errno's own words (aiohttp's message
    repeats the address), and the flag that fixes it: the port's when it is taken, else the
    host's."""
    reason = os.strerror(e.errno) if e.errno else str(e)
    flag = flags[0] if e.errno == errno.EADDRINUSE else flags[1]
    return f"cannot {what} {host}:{port} ({reason}); pass another {flag}"


def _check_bindable(host: str, port: int, what: str, flags: tuple[str, str]) -> None:
    """Raise :class:`ListenError` when no address of ``host`` can bind ``port`` now. grpcio
    reports a failed bind only as a log line of its own and a RuntimeError without the reason;
    this finds the reason first. Port 0 always binds."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(
            f"cannot {what} {host}:{port} ({e.strerror}); pass another {flags[1]}"
        ) from e
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a port in TIME_WAIT after a restart is free to it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as e:
                error = e
                continue
        return
    if error is not None:
        raise ListenError(_cannot_bind(what, host, port, error, flags)) from error


class Controller:
    """A running controller: the server, its shell, and (embedded mode) its local agents.

    With ``ha`` (etcd configured) it campaigns for leadership and serves only while it leads
    (see ``deerflow_controller.ha``); without, it is the only controller and always serves."""

    def __init__(
        self,
        config: ControllerConfig,
        ha: HaConfig | None = None,
        *,
        credentials: Credentials | None = None,
        peer_identity: PeerIdentity | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self.gate: LeaderGate | None = None
        if ha is not None:
            # Imported here: the gate and the runner need the etcd client, embedded mode not.
            from deerflow_controller.ha import LeaderGate

            self.gate = LeaderGate("")
        # Outermost: a request that does not parse is refused before the gate or a servicer
        # reads it.
        self.malformed = MalformedRequestGuard()
        interceptors: list[grpc.aio.ServerInterceptor] = [self.malformed]
        # --- auth (issue #17): credentials checked before the gate and every servicer.
        self.credentials = credentials
        self.auth: AuthInterceptor | None = None
        self._credentials_watch: asyncio.Task[None] | None = None
        if credentials is not None:
            self.auth = AuthInterceptor(credentials, peer_identity)
            interceptors.append(self.auth)
        # --- end auth
        if self.gate is not None:
            interceptors.append(self.gate)
        self.server = grpc.aio.server(
            interceptors=interceptors, options=server_options(config.max_message_bytes)
        )
        _check_bindable(config.host, config.port, "listen for gRPC on", GRPC_FLAGS)
        try:
            # grpcio raises RuntimeError when the bind fails (older releases returned 0); the
            # check above makes this the rare case of a port taken in between.
            self.port = _add_port(self.server, f"{config.host}:{config.port}", tls)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise ListenError(
                f"cannot listen for gRPC on {config.host}:{config.port}; pass another --port "
                "(0 picks a free one) or --host"
            )
        if not config.controller_id:
            self.config = config = replace(config, controller_id=f"{config.host}:{self.port}")
        self.shell = Shell(config)
        # Observability: traces from the OTEL_* environment now, so that the first job is seen.
        self.observability = Observability.from_env(self.shell)
        self.observability.credentials = credentials  # auth: the HTTP side's tokens
        self.tuner: TunerLoop | None = None
        if config.tuner.mode is not Mode.OFF:
            # The tuner reads latencies from the metrics tap, so it keeps metrics even without
            # the HTTP side.
            sink = self.observability.sink
            self.tuner = TunerLoop(
                self.shell,
                Tuner(config.tuner),
                self.observability.enable_metrics(),
                sink.emit if sink is not None else None,
            )
            self.observability.tuner = self.tuner
        self.serving = False
        self.health = health.aio.HealthServicer()
        client_pb2_grpc.add_JobServiceServicer_to_server(JobService(self.shell), self.server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentService(self.shell), self.server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(self.shell, self.tuner), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.ha: HaRunner | None = None
        if self.gate is not None and ha is not None:
            from deerflow_controller.ha import HaRunner

            self.gate.address = ha.advertise or self.address
            self.ha = HaRunner(
                self.shell,
                self.gate,
                ha,
                set_serving=self.set_serving,
                observability=self.observability,
            )

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        await self.server.start()
        self.shell.start()
        if self.credentials is not None:
            # auth: the file is looked at each second too, so that a revocation ends the open
            # streams of its credential even when no new call comes to look.
            self._credentials_watch = asyncio.get_running_loop().create_task(
                self.credentials.watch()
            )
        if self.tuner is not None:
            self.tuner.start()
        if self.ha is not None:
            # A standby until the election says otherwise.
            await self.set_serving(False)
            await self.ha.start()
            return
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        """gRPC health (and /readyz): SERVING while this controller takes work."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)
        self.serving = serving

    async def begin_drain(self) -> None:
        """Report NOT_SERVING (gRPC health and /readyz) while still serving, so that load
        balancers stop sending new clients before the server goes away."""
        self.serving = False
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.begin_drain()
        if self.ha is not None:
            # Resigning revokes the lease: a standby takes over now, not at the lease's expiry.
            await self.ha.stop()
        if self.tuner is not None:
            await self.tuner.stop()
        if self._credentials_watch is not None:
            self._credentials_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._credentials_watch
        await self.shell.stop()
        await self.server.stop(grace_s)
        await self.observability.stop()


def _add_port(server: grpc.aio.Server, address: str, tls: TlsFiles | None) -> int:
    """Listen on ``address``: TLS (mutual with ``tls.ca``, reloaded on change) or plaintext."""
    if tls is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, server_credentials(tls)))


async def _serve_http(controller: Controller, host: str, port: int | None) -> str | None:
    """Start the HTTP side (dashboard, /metrics, health) on ``port`` (None: the default port,
    skipped with a warning when taken; 0: off). Returns host:port, or None when off."""
    wanted = DEFAULT_HTTP_PORT if port is None else port
    if wanted == 0:
        return None
    try:
        bound = await controller.observability.serve_http(
            host,
            wanted,
            ready=lambda: controller.serving,
            ssl_context=server_ssl_context(controller.tls) if controller.tls else None,
        )
    except OSError as e:
        if port is not None:
            raise ListenError(_cannot_bind("serve HTTP on", host, wanted, e, HTTP_FLAGS)) from e
        log.warning(
            "HTTP port %d is taken (%s): no dashboard or /metrics; pass --http-port", wanted, e
        )
        return None
    return f"{host}:{bound}"


async def serve(
    config: ControllerConfig,
    *,
    local_agents: int = 0,
    agent_args: Sequence[str] = (),
    http_port: int | None = None,
    http_host: str | None = None,
    ha: HaConfig | None = None,
    credentials: Credentials | None = None,
    insecure: bool = False,
    peer_identity: PeerIdentity | None = None,
    tls: TlsFiles | None = None,
    prestarted: LocalAgents | None = None,
) -> None:
    """Run a controller until SIGTERM or SIGINT, with ``local_agents`` agent processes.

    ``prestarted``: those agents, spawned earlier (``deerflow-controller`` does so before its
    own imports); without, they are spawned here, before the server exists.

    ``http_port``: the dashboard, /metrics and health endpoints (None: 7401 if free; 0: off).
    ``ha``: campaign for leadership on etcd, journal and restore (None: embedded mode).
    ``credentials`` (``--auth-file``): tokens required on every call; without them a host
    other than loopback is refused (:class:`ListenError`) unless ``insecure``.
    ``tls``: serve gRPC and HTTP over TLS (mutual with ``tls.ca``); None: plaintext. Under
    mutual TLS the auth file's agent ``identity`` entries match the verified certificate's
    (:func:`deerflow_common.tls.certificate_identity`) unless ``peer_identity`` is given."""
    # Spawned before the server exists (or earlier still, ``prestarted``): a fork while gRPC's
    # threads serve (a TLS handshake calling the certificate fetcher, an etcd call) can leave
    # the child stuck on a lock one of them held, and the event loop with it. They are told
    # where to connect once the server is up, so their first attempt finds it.
    agents = prestarted if prestarted is not None else LocalAgents(local_agents)
    try:
        controller, agent_args, agent_env = _prepare(
            config,
            local_agents,
            agent_args,
            http_port=http_port,
            http_host=http_host,
            ha=ha,
            credentials=credentials,
            insecure=insecure,
            peer_identity=peer_identity,
            tls=tls,
        )
    except BaseException:
        await agents.stop()
        raise
    try:
        if http_port != 0:
            # Metrics from the first event on, though the HTTP side is bound just after.
            controller.observability.enable_metrics()
        await controller.start()
        # The agents connect while the HTTP side (aiohttp) is loaded and bound.
        await agents.start(controller.address, agent_args, env=agent_env)
        http = await _serve_http(controller, http_host or config.host, http_port)
        # Signals are ours before the ready line: whoever read it may send them at once (a
        # SIGHUP's default action would end the process).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if credentials is not None:
            # auth: SIGHUP re-reads the file now (it is also re-read when it changes).
            loop.add_signal_handler(signal.SIGHUP, lambda: credentials.reload(force=True))
        # The ready line: scripts and tests read the bound port from it (useful with --port 0).
        print(f"deerflow-controller listening on {controller.address}", flush=True)
        if http is not None:
            print(f"deerflow-controller http on {http}", flush=True)
        if tls is not None:
            log.info(
                "gRPC%s over TLS%s; certificate files are re-read when they change",
                " and HTTP" if http is not None else "",
                ": client certificates required (--tls-client-ca)" if tls.ca else "",
            )
        if local_agents and ha is None:
            log.info(
                "embedded mode: %d local agents, no etcd: state is in memory only", local_agents
            )
        await stop.wait()
        log.info("shutting down")
        await controller.begin_drain()
    finally:
        await agents.stop()
        await controller.stop()


def _prepare(
    config: ControllerConfig,
    local_agents: int,
    agent_args: Sequence[str],
    *,
    http_port: int | None,
    http_host: str | None,
    ha: HaConfig | None,
    credentials: Credentials | None,
    insecure: bool,
    peer_identity: PeerIdentity | None,
    tls: TlsFiles | None,
) -> tuple[Controller, list[str], dict[str, str]]:
    """The controller (bound, not yet serving), and its local agents' arguments and
    environment; raises :class:`ListenError` when it may not or cannot listen."""
    # --- auth (issue #17): closed by default.
    hosts = [config.host] + ([http_host or config.host] if http_port != 0 else [])
    problem = exposure_problem(hosts, auth=credentials is not None, insecure=insecure)
    if problem is not None:
        raise ListenError(problem)
    announce(hosts, auth=credentials is not None, insecure=insecure)
    agent_env: dict[str, str] = {}
    if credentials is not None and local_agents:
        # The file holds digests only: the local agents get a join token made now, in memory.
        join_token = secrets.token_urlsafe(32)
        credentials.add_agent_token("local-agents", join_token)
        agent_env["DEERFLOW_JOIN_TOKEN"] = join_token
    # --- end auth
    if peer_identity is None and tls is not None and tls.ca is not None:
        peer_identity = certificate_identity
    if ha is not None:
        agent_args = [
            *agent_args,
            "--etcd",
            ",".join(ha.endpoints),
            "--etcd-prefix",
            ha.prefix,
        ]
    if tls is not None:
        agent_args = [*agent_args, *local_agent_tls_args(tls)]
    controller = Controller(
        config, ha, credentials=credentials, peer_identity=peer_identity, tls=tls
    )
    return controller, list(agent_args), agent_env


def local_agent_tls_args(tls: TlsFiles) -> list[str]:
    """The TLS flags of the agents a TLS controller starts (``--local-agents``): they trust the
    certificates in the controller's own ``--tls-cert`` file (``deerflow certs`` puts the CA in
    it) and, under mutual TLS, present the controller's certificate as theirs. The agents'
    ``$DEERFLOW_TLS_*`` variables, when set, are used instead (click prefers flags, so those
    are not passed then)."""
    args: list[str] = []
    if not os.environ.get(CA_ENV) and tls.cert is not None:
        args += ["--tls-ca", str(tls.cert)]
    wants_identity = tls.ca is not None and not os.environ.get(CERT_ENV)
    if wants_identity and tls.cert is not None and tls.key is not None:
        args += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    return args
