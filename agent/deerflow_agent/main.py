"""``deerflow-agent``: the worker daemon's command line.

Exit status: 0 after a drain (SIGTERM, SIGINT or a Drain message from the controller); 128 + the
signal number when a second SIGTERM/SIGINT makes it exit at once, abandoning running attempts
(the controller runs them again elsewhere); 2 for bad flags or handler specs; 1 when the
``--metrics-port`` cannot be served (one line on stderr saying which flag to change).
"""

from __future__ import annotations

# Before anything imports grpc, which reads its experiments once on import.
from deerflow_common.grpc_endpoints import use_classic_endpoints

use_classic_endpoints()

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import click

from deerflow_common import run, setup_logging
from deerflow_common.config_file import config_option
from deerflow_common.etcd import DEFAULT_PREFIX, DEFAULT_TTL_S, Keys, parse_endpoint
from deerflow_common.gc_tuning import tune_gc_for_daemon
from deerflow_common.tls import (
    CA_ENV,
    CERT_ENV,
    KEY_ENV,
    TlsError,
    TlsFiles,
    load,
    server_ssl_context,
)

from ._config import AgentConfig
from ._http import close_http_session
from ._netpolicy import ALLOW_ENV, AddressPolicy
from ._session import Agent
from ._telemetry import AgentTelemetry
from .registry import HandlerRegistry

log = logging.getLogger("deerflow_agent")


class _StartError(Exception):
    """The agent cannot start as told; the message is one sentence naming the flag to change."""


def _cannot_serve_metrics(host: str, port: int, e: OSError) -> str:
    """The address, the reason in the errno's own words (aiohttp's message repeats the
    address), and the flag that fixes it: the port's when it is taken, else the host's."""
    reason = os.strerror(e.errno) if e.errno else str(e)
    flag = "--metrics-port (0 turns it off)" if e.errno == errno.EADDRINUSE else "--metrics-host"
    return f"cannot serve metrics on {host}:{port} ({reason}); pass another {flag}"


def _parse_controllers(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    addresses = tuple(a.strip() for a in value.split(",") if a.strip())
    if not addresses:
        raise click.BadParameter("give at least one controller address, as host:port")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(
                f"{address!r} is not host:port (for example 10.0.0.5:7400); "
                "separate several controllers with commas"
            )
    return addresses


def _parse_labels(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value (for example --label gpu=a100)")
        labels[key.strip()] = val.strip()
    return labels


def _parse_handler_slots(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, int]:
    caps: dict[str, int] = {}
    for item in value:
        name, sep, n = item.partition("=")
        name, n = name.strip(), n.strip()
        if not sep or not name or not n.isdigit() or int(n) < 1:
            raise click.BadParameter(
                f"{item!r} is not NAME=N with N >= 1 (for example --handler-slots llm=3)"
            )
        caps[name] = int(n)
    return caps


def _parse_http_allow(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        policy = AddressPolicy.parse(value or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return tuple(str(n) for n in policy.allow)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--controller",
    "controllers",
    default="127.0.0.1:7400",
    show_default=True,
    envvar="DEERFLOW_CONTROLLER",
    callback=_parse_controllers,
    help="Controller address host:port; a comma-separated list is tried in turn "
    "(env DEERFLOW_CONTROLLER).",
)
@click.option(
    "--id",
    "agent_id",
    default=None,
    help="Unique agent id [default: hostname-pid].",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Concurrent attempts on this agent, all handlers together.",
)
@click.option(
    "--handler",
    "handler_specs",
    multiple=True,
    metavar="MODULE:ATTR",
    help="Install a handler besides the entry-point ones (repeatable).",
)
@click.option(
    "--handler-slots",
    "handler_slots",
    multiple=True,
    metavar="NAME=N",
    callback=_parse_handler_slots,
    help="Run at most N attempts of handler NAME at once on this agent, within --slots "
    "(repeatable); a per-process cap like DeerFlow 2.0's LLM concurrency limit.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_parse_labels,
    help="A label tasks can require (repeatable).",
)
@click.option(
    "--http-allow",
    "http_allow",
    default="",
    envvar=ALLOW_ENV,
    metavar="NETWORKS",
    callback=_parse_http_allow,
    help="Networks (CIDR, comma-separated) that URLs in task payloads (the http handler's url, "
    "a provider's payload base_url) may lead to besides public addresses; by default "
    "loopback, link-local, cloud metadata, private and reserved addresses are refused "
    f"(env {ALLOW_ENV}; see docs/SECURITY.md).",
)
@click.option(
    "--cpu-workers",
    type=click.IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="number of CPUs",
    help="Processes in the pool that runs cpu handlers.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Serve /metrics, /healthz and /readyz on this port; 0 = off.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics endpoint listens on.",
)
@click.option(
    "--etcd",
    "etcd",
    default=None,
    envvar="DEERFLOW_ETCD",
    help="etcd endpoint(s) host:port[,...]: register under a lease and follow the leader "
    "controller (env DEERFLOW_ETCD); --controller is then only the first guess.",
)
@click.option(
    "--etcd-prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="Key prefix of the cluster in etcd.",
)
@click.option(
    "--lease-ttl",
    type=click.IntRange(1, 60),
    default=DEFAULT_TTL_S,
    show_default=True,
    help="TTL (s) of the agent's etcd lease: cut off from etcd this long, it counts as dead.",
)
@click.option(
    "--join-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the join token of a controller that authenticates agents (its first "
    "line) [default: $DEERFLOW_JOIN_TOKEN].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default=None,
    help="Log level [default: $DEERFLOW_LOG_LEVEL or info].",
)
# -- TLS (docs/SECURITY.md, "TLS and mutual TLS") --
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=CA_ENV,
    help=f"PEM CA certificates: connect to the controller over TLS and verify it with them "
    f"(env {CA_ENV}). Without any --tls-* flag: plaintext.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=CERT_ENV,
    help=f"PEM certificate of this agent, for a controller that requires one (mutual TLS); "
    f"also serves --metrics-port over HTTPS (env {CERT_ENV}).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=KEY_ENV,
    help=f"PEM private key of --tls-cert (env {KEY_ENV}).",
)
@config_option
def main(
    controllers: tuple[str, ...],
    agent_id: str | None,
    slots: int,
    handler_specs: tuple[str, ...],
    handler_slots: dict[str, int],
    labels: dict[str, str],
    http_allow: tuple[str, ...],
    cpu_workers: int,
    metrics_port: int,
    metrics_host: str,
    etcd: str | None,
    etcd_prefix: str,
    lease_ttl: int,
    join_token_file: Path | None,
    log_level: str | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Run a deerflow agent: connect to the controller and run the tasks it assigns."""
    setup_logging("deerflow-agent", log_level)
    tls = TlsFiles(tls_cert, tls_key, tls_ca)
    try:
        load(tls)
    except TlsError as e:
        raise click.UsageError(str(e)) from None
    try:
        registry = HandlerRegistry.discover(handler_specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--handler") from None
    if not registry:
        raise click.UsageError("no handlers installed: add one with --handler module:attr")
    unknown = sorted(set(handler_slots) - set(registry))
    if unknown:
        raise click.BadParameter(
            f"no handler named {', '.join(map(repr, unknown))} is installed "
            f"(installed: {', '.join(sorted(registry))})",
            param_hint="--handler-slots",
        )
    config = AgentConfig(
        controllers=controllers,
        agent_id=agent_id or f"{socket.gethostname()}-{os.getpid()}",
        slots=slots,
        cpu_workers=cpu_workers,
        handler_slots=handler_slots,
        labels=labels,
        http_allow=http_allow,
        token=join_token(join_token_file),
        tls=tls if tls.given else None,
    )
    log.info(
        "deerflow-agent %s starting: %d slots, handlers %s",
        config.agent_id,
        slots,
        ", ".join(
            f"{name} (at most {handler_slots[name]})" if name in handler_slots else name
            for name in sorted(registry)
        ),
    )
    if http_allow:
        log.info("URLs in task payloads may also lead to %s", ", ".join(http_allow))
    endpoints = [e.strip() for e in (etcd or "").split(",") if e.strip()]
    try:
        for endpoint in endpoints:
            parse_endpoint(endpoint)
        Keys(etcd_prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--etcd/--etcd-prefix") from None
    presence = (",".join(endpoints), etcd_prefix, lease_ttl) if endpoints else None
    tune_gc_for_daemon()
    try:
        run(_serve(config, registry, metrics_host, metrics_port, presence))
    except _StartError as e:
        click.echo(f"deerflow-agent: {e}", err=True)
        sys.exit(1)


async def _serve(
    config: AgentConfig,
    registry: HandlerRegistry,
    metrics_host: str,
    metrics_port: int,
    presence: tuple[str, str, int] | None = None,
) -> None:
    telemetry = AgentTelemetry.from_env(config.agent_id, metrics=metrics_port > 0)
    agent = Agent(config, registry, observer=telemetry.observer)
    async with contextlib.AsyncExitStack() as stack:
        if presence is not None:
            endpoint, prefix, ttl = presence
            from ._presence import EtcdPresence  # the etcd client: only with --etcd

            await stack.enter_async_context(EtcdPresence(agent, endpoint, prefix, lease_ttl_s=ttl))
        await _run_agent(agent, config, telemetry, metrics_host, metrics_port)


async def _run_agent(
    agent: Agent,
    config: AgentConfig,
    telemetry: AgentTelemetry,
    metrics_host: str,
    metrics_port: int,
) -> None:
    if metrics_port:
        tls = config.tls
        # The metrics port is HTTPS when the agent has a certificate; it asks for none.
        https = TlsFiles(tls.cert, tls.key) if tls is not None and tls.cert else None
        try:
            bound = await telemetry.serve_http(
                agent, metrics_host, metrics_port, server_ssl_context(https) if https else None
            )
        except OSError as e:
            raise _StartError(_cannot_serve_metrics(metrics_host, metrics_port, e)) from None
        # A line scripts and tests can wait for (the agent has no other ready line).
        print(f"deerflow-agent metrics on {metrics_host}:{bound}", flush=True)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            agent.drain(f"received {name}")
            return
        log.warning(
            "received %s again: exiting now, abandoning %d running attempts",
            name,
            agent.runtime.running,
        )
        logging.shutdown()
        os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await agent.run()
    finally:
        await agent.aclose()
        await close_http_session()
        await telemetry.stop()
    log.info("deerflow-agent %s exited cleanly", config.agent_id)


if __name__ == "__main__":
    main()


def join_token(path: Path | None) -> str:
    """The join token: ``--join-token-file``'s first line, else ``$DEERFLOW_JOIN_TOKEN`` (or
    the older ``$DEERFLOW_AGENT_TOKEN``); "" for none. Raises click.BadParameter naming the
    flag when the file cannot be read or is empty. Public for launchers that run agents as
    this command would (the light-agent benchmark)."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"cannot read {path}: {exc}", param_hint="--join-token-file"
            ) from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise click.BadParameter(f"{path} is empty", param_hint="--join-token-file")
        return token
    return os.environ.get("DEERFLOW_JOIN_TOKEN") or os.environ.get("DEERFLOW_AGENT_TOKEN", "")
