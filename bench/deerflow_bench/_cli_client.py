"""``deerflow bench sdk`` and ``deerflow bench latency``: the client's side, through the public
SDK as callers use it (issue #19 items 1 and 2). Registered on the ``bench`` group of
:mod:`._cli`."""

from __future__ import annotations

import click

from deerflow_common import run

from ._cli import _emit, agents_option, bench, json_option, slots_option, tasks_option


@bench.command("sdk")
@tasks_option(10000)
@agents_option
@slots_option(64)
@click.option(
    "--threads",
    default=16,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Caller threads (sync-threads) and coroutines (async-concurrent).",
)
@click.option(
    "--job-size",
    default=20,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Tasks per job of the thread-pool and concurrent modes.",
)
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 50), help="Rounds.")
@json_option
def bench_sdk(
    tasks: int, agents: int, slots: int, threads: int, job_size: int, rounds: int, as_json: bool
) -> None:
    """The blocking Client (one job; a thread pool of callers) against the AsyncClient on the
    same cluster, interleaved round by round."""
    from . import _sdk_bench

    _emit(run(_sdk_bench.sdk(tasks, agents, slots, threads, job_size, rounds)), as_json)


@bench.command("latency")
@click.option(
    "--samples",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="One-task jobs measured at idle and again under load.",
)
@agents_option
@slots_option(64)
@click.option(
    "--load",
    "load_fraction",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Background load as a fraction of the capacity measured first.",
)
@click.option(
    "--load-job-size",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Tasks per job of the background load.",
)
@json_option
def bench_latency(
    samples: int, agents: int, slots: int, load_fraction: float, load_job_size: int, as_json: bool
) -> None:
    """One-task jobs: submit-to-start, start-to-result at the client and round trip (p50, p99)
    at idle and under a background load."""
    from . import _latency

    _emit(run(_latency.latency(samples, agents, slots, load_fraction, load_job_size)), as_json)
