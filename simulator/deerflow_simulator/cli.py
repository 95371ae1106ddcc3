"""``deerflow sim`` (or ``python -m deerflow_simulator``): run the simulated providers until
SIGINT or SIGTERM.

Prints ``deerflow-sim listening on http://HOST:PORT`` on stdout once it accepts connections (a
launcher waits for that line), then the keys it knows on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

import click

from deerflow_common import run
from deerflow_common.cli_types import FiniteFloatRange

from .config import KeyLimits, SimConfig, parse_key_spec

__all__ = ["DEFAULT_KEY", "DEFAULT_PORT", "build_config", "serve", "sim"]

DEFAULT_PORT = 7480
DEFAULT_KEY = ("sim-key", KeyLimits(rpm=6000, tpm=2_000_000, concurrency=200))
"""The key served when neither --config nor --key names one: generous limits, so a demo is
not throttled unless it asks to be."""


def build_config(
    config_path: Path | None,
    key_specs: tuple[str, ...] = (),
    **overrides: Any,
) -> SimConfig:
    """The config file (or the defaults), with --key specs added over its keys and the options
    that were given replacing its fields. Raises ValueError naming what is wrong."""
    config = SimConfig.from_json(config_path) if config_path is not None else SimConfig()
    keys = dict(config.keys)
    keys.update(parse_key_spec(spec) for spec in key_specs)
    if not keys:
        keys = dict([DEFAULT_KEY])
    given = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(config, keys=keys, **given)


async def serve(config: SimConfig, host: str, port: int, *, access_log: bool = False) -> None:
    """Serve until SIGINT or SIGTERM. Raises OSError when the address cannot be bound."""
    from .server import Simulator  # aiohttp: only when the simulator runs

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Simulator(config, host=host, port=port, access_log=access_log) as simulator:
            click.echo(f"deerflow-sim listening on {simulator.url}")
            sys.stdout.flush()
            for key, limits in config.keys.items():
                shown = ", ".join(
                    f"{name} {value:g}"
                    for name, value in limits.to_dict().items()
                    if value is not None and name in ("rpm", "tpm", "concurrency", "burst_slope")
                )
                click.echo(f"  key {key}: {shown or 'no limits'}", err=True)
            await stop.wait()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


@click.command("sim", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; loopback unless you mean to expose it.",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port; 0 picks a free one (shown on the ready line).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file of a SimConfig: keys, time_scale, error_rate, latencies...",
)
@click.option(
    "--key",
    "key_specs",
    multiple=True,
    metavar="NAME=rpm:N,tpm:N,concurrency:N,slope:X",
    help="An API key and its limits (also floor:RPS, window:S); repeatable; adds to "
    "or replaces the config file's keys. Default: sim-key=rpm:6000,"
    "tpm:2000000,concurrency:200.",
)
@click.option(
    "--time-scale",
    type=FiniteFloatRange(min=0),
    default=None,
    help="Multiply every latency (default 1; 0.01 answers 100x faster).",
)
@click.option(
    "--error-rate",
    type=FiniteFloatRange(0, 1),
    default=None,
    help="Share of admitted requests answered 500/502/503 (default 0).",
)
@click.option(
    "--crawl-empty-rate",
    type=FiniteFloatRange(0, 1),
    default=None,
    help="Share of URLs the reader answers empty or 422 (default 0.15).",
)
@click.option("--seed", type=int, default=None, help="Seed of every random draw (default 0).")
@click.option("--access-log", is_flag=True, help="Log one line per request.")
def sim(
    host: str,
    port: int,
    config_path: Path | None,
    key_specs: tuple[str, ...],
    time_scale: float | None,
    error_rate: float | None,
    crawl_empty_rate: float | None,
    seed: int | None,
    access_log: bool,
) -> None:
    """Run the provider simulator: OpenAI-compatible chat, Tavily-like search and a Jina-like
    reader, each with per-key RPM/TPM/concurrency/burst limits."""
    try:
        config = build_config(
            config_path,
            key_specs,
            time_scale=time_scale,
            error_rate=error_rate,
            crawl_empty_rate=crawl_empty_rate,
            seed=seed,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        run(serve(config, host, port, access_log=access_log))
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
