"""``deerflow bench startup``: the embedded controller's start-up (issue #19, item 3).
Registered on the ``bench`` group of :mod:`._cli`."""

from __future__ import annotations

import click

from deerflow_common import run

from ._cli import _emit, bench, json_option


@bench.command("startup")
@click.option(
    "--runs",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Start-ups of deerflow-controller --local-agents 2 measured.",
)
@click.option(
    "--http/--no-http",
    default=True,
    show_default=True,
    help="Serve the HTTP side (dashboard, /metrics) on a free port, as the daemon does by default.",
)
@click.option(
    "--cli-runs",
    default=5,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Runs of `deerflow --help` and `deerflow submit --help` timed.",
)
@json_option
def bench_startup(runs: int, http: bool, cli_runs: int, as_json: bool) -> None:
    """Start-up of deerflow-controller --local-agents 2: to the ready line, to both agents
    connected; import time of controller and agent; the command line's start-up."""
    from ._startup import startup

    _emit(run(startup(runs, http, cli_runs)), as_json)
