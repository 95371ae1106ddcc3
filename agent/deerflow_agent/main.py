"""``deerflow-agent``: the worker daemon's command line.

Exit status: 0 after a drain (SIGTERM, SIGINT or a Drain message from the controller); 128 + the
signal number when a second SIGTERM/SIGINT makes it exit at once, abandoning running attempts
(the controller runs them again elsewhere); 2 for bad flags or handler specs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import click

from deerflow_common import run, setup_logging

from .builtins import close_http_session
from .registry import HandlerRegistry
from .session import Agent, AgentConfig

log = logging.getLogger("deerflow_agent")


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
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_parse_labels,
    help="A label tasks can require (repeatable).",
)
@click.option(
    "--cpu-workers",
    type=click.IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="number of CPUs",
    help="Processes in the pool that runs cpu handlers.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default=None,
    help="Log level [default: $DEERFLOW_LOG_LEVEL or info].",
)
def main(
    controllers: tuple[str, ...],
    agent_id: str | None,
    slots: int,
    handler_specs: tuple[str, ...],
    labels: dict[str, str],
    cpu_workers: int,
    log_level: str | None,
) -> None:
    """Run a deerflow agent: connect to the controller and run the tasks it assigns."""
    setup_logging("deerflow-agent", log_level)
    try:
        registry = HandlerRegistry.discover(handler_specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--handler") from None
    if not registry:
        raise click.UsageError("no handlers installed: add one with --handler module:attr")
    config = AgentConfig(
        controllers=controllers,
        agent_id=agent_id or f"{socket.gethostname()}-{os.getpid()}",
        slots=slots,
        cpu_workers=cpu_workers,
        labels=labels,
        token=os.environ.get("DEERFLOW_AGENT_TOKEN", ""),
    )
    log.info(
        "deerflow-agent %s starting: %d slots, handlers %s",
        config.agent_id,
        slots,
        ", ".join(sorted(registry)),
    )
    run(_serve(config, registry))


async def _serve(config: AgentConfig, registry: HandlerRegistry) -> None:
    agent = Agent(config, registry)
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
    log.info("deerflow-agent %s exited cleanly", config.agent_id)


if __name__ == "__main__":
    main()
