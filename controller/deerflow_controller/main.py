"""``deerflow-controller``: run the controller daemon."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from deerflow_common import run, setup_logging

from .config import ControllerConfig, SchedulerConfig
from .ratelimit import LimiterConfig
from .server import serve


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=7400,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="gRPC port; 0 picks a free one (printed on the ready line).",
)
@click.option(
    "--local-agents",
    default=0,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Start this many agent processes here (embedded mode, no etcd).",
)
@click.option(
    "--agent-slots",
    default=16,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Slots of each local agent.",
)
@click.option(
    "--agent-arg",
    multiple=True,
    help="Extra argument passed to each local agent (repeatable), e.g. --agent-arg=--handler=m:f.",
)
@click.option(
    "--max-payload-bytes",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(1),
    help="Largest task payload accepted.",
)
@click.option(
    "--default-timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Start-to-close timeout (s) for tasks that set none.",
)
@click.option(
    "--default-retries",
    default=3,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Retries for tasks that set none.",
)
@click.option(
    "--prefetch",
    default=2,
    show_default=True,
    type=click.IntRange(0, 1024),
    help="Least attempts an agent may hold beyond its slots (an eighth of its slots if more).",
)
@click.option(
    "--limits",
    "limits_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of rate limits per key pattern ([[ratelimit.keys]] pattern/rpm/tpm/...).",
)
@click.option(
    "--http-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port of the dashboard, /metrics, /healthz and /readyz; 0 turns HTTP off "
    "[default: 7401, skipped with a warning when taken].",
)
@click.option(
    "--http-host",
    default=None,
    help="Address the HTTP side listens on [default: --host].",
)
@click.option(
    "--log-level",
    default=None,
    help="DEBUG, INFO, WARNING... (default $DEERFLOW_LOG_LEVEL or INFO).",
)
def main(
    host: str,
    port: int,
    local_agents: int,
    agent_slots: int,
    agent_arg: tuple[str, ...],
    max_payload_bytes: int,
    default_timeout: float,
    default_retries: int,
    prefetch: int,
    limits_path: Path | None,
    http_port: int | None,
    http_host: str | None,
    log_level: str | None,
) -> None:
    """Run the deerflow-parallel controller."""
    setup_logging("deerflow-controller", log_level)
    try:
        limits = LimiterConfig.from_toml(limits_path) if limits_path else LimiterConfig()
    except (ValueError, OSError) as e:
        raise click.BadParameter(str(e), param_hint="--limits") from None
    config = ControllerConfig(
        limits=limits,
        host=host,
        port=port,
        max_payload_bytes=max_payload_bytes,
        scheduler=replace(
            SchedulerConfig(),
            default_timeout_s=default_timeout,
            default_max_retries=default_retries,
            prefetch=prefetch,
        ),
    )
    args = ["--slots", str(agent_slots), *agent_arg]
    run(
        serve(
            config,
            local_agents=local_agents,
            agent_args=args,
            http_port=http_port,
            http_host=http_host,
        )
    )


if __name__ == "__main__":
    main()
