"""Light agents: one process holding many real agent streams to a controller (issue #19, item
4; ``deerflow bench scale --sections light_agents``).

``python -m deerflow_bench._light_agents --controller ADDR --count N --id-prefix P --slots S``
runs N :class:`deerflow_agent.Agent` objects in one asyncio loop, ids ``P1`` ... ``PN`` (from
``--first``). Each is the real agent: its own Hello (every entry-point handler, as
``deerflow-agent`` installs them, so echo answers at once through the runtime), its own
instance secret, heartbeats on the interval the controller's Welcome gives, results batched per
stream, reconnects, drain. The join token is read as the agent reads it (``--join-token-file``,
else ``$DEERFLOW_JOIN_TOKEN``; none for a controller on loopback without ``--auth-file``).

What is shared, so that 200 agents cost two processes and not 200 (about 60 MB each): the
interpreter, the handler registry and the load sampler (one sample per heartbeat interval per
process; heartbeats still carry it per agent). Each agent still gets its own TCP connection
(``grpc.use_local_subchannel_pool``), as separate processes would: the controller serves one
connection and one stream per agent.

SIGTERM or SIGINT drains every agent (exit 0 when all have drained); a second one exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from deerflow_agent import Agent, AgentConfig, Handler, HandlerRegistry, LoadSampler
from deerflow_agent.main import join_token
from deerflow_common import run, setup_logging
from deerflow_common.gc_tuning import tune_gc_for_daemon
from deerflow_controller.service.launcher import ManagedProcess

__all__ = ["OWN_CONNECTION", "LightAgentsProcess", "serve"]

log = logging.getLogger("deerflow_bench.light_agents")

MODULE = "deerflow_bench._light_agents"
READY_LINE = "light agents started "

OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
"""Channel option: this channel's connection is its own. gRPC otherwise lets channels of one
process with the same target and options share one connection, so a hundred agents would be
a hundred streams on one connection, unlike a hundred agent processes."""


def agent_ids(prefix: str, first: int, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(first, first + count)]


async def serve(configs: Sequence[AgentConfig], handlers: Mapping[str, Handler]) -> None:
    """Run one :class:`Agent` per config until every one has drained (after SIGTERM/SIGINT,
    or a Drain from the controller to each). Prints the ready line once they all run."""
    load = LoadSampler()
    agents = [Agent(c, handlers, load=load, extra_channel_options=OWN_CONNECTION) for c in configs]
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            logging.shutdown()
            os._exit(128 + signum)
        for agent in agents:
            agent.drain(f"received {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    runs = [asyncio.create_task(a.run()) for a in agents]
    print(f"{READY_LINE}{len(agents)}", flush=True)
    try:
        await asyncio.gather(*runs)
    finally:
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await asyncio.gather(*(a.aclose() for a in agents), return_exceptions=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--controller", required=True, help="Controller address host:port.")
@click.option(
    "--count", type=click.IntRange(1, 1000), required=True, help="Agents in this process."
)
@click.option("--id-prefix", default="light-", show_default=True, help="Agent id prefix.")
@click.option(
    "--first",
    type=click.IntRange(0, 1_000_000),
    default=1,
    show_default=True,
    help="Number of the first agent (ids are PREFIX<first> ... PREFIX<first+count-1>).",
)
@click.option(
    "--slots", type=click.IntRange(1, 100_000), default=4, show_default=True, help="Per agent."
)
@click.option(
    "--join-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="As deerflow-agent's [default: $DEERFLOW_JOIN_TOKEN].",
)
def main(
    controller: str,
    count: int,
    id_prefix: str,
    first: int,
    slots: int,
    join_token_file: Path | None,
) -> None:
    """Run COUNT real agents in this one process (see the module's docstring)."""
    setup_logging("deerflow-light-agents")
    token = join_token(join_token_file)
    handlers = HandlerRegistry.discover(())
    configs = [
        AgentConfig(controllers=(controller,), agent_id=agent_id, slots=slots, token=token)
        for agent_id in agent_ids(id_prefix, first, count)
    ]
    tune_gc_for_daemon()
    run(serve(configs, handlers))


class LightAgentsProcess(ManagedProcess):
    """A light-agents process (this module's command) for the benchmarks; stopped by its pid."""

    count = 0

    @classmethod
    async def start(
        cls,
        controller: str,
        count: int,
        *,
        id_prefix: str = "light-",
        first: int = 1,
        slots: int = 4,
        quiet: bool = True,
        ready_timeout_s: float = 60.0,
    ) -> LightAgentsProcess:
        """Blocks until every agent of the process runs (not yet connected: ask the controller,
        ``AsyncClient.agents(wait_for=...)``); raises as ``ControllerProcess.start`` does."""
        args = [
            "--controller", controller, "--count", str(count), "--id-prefix", id_prefix,
            "--first", str(first), "--slots", str(slots),
        ]  # fmt: skip
        self = await cls.spawn(f"{id_prefix}*", MODULE, args, quiet=quiet, piped=True)
        await self._await_ready_line(READY_LINE, ready_timeout_s)
        self.count = count
        return self


if __name__ == "__main__":
    main()
