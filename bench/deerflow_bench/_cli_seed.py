"""``deerflow bench research`` and ``deerflow bench tuner``: the seed's promised results table
measured against DeerFlow's own executors, and the AutoPerformanceTuner's benchmark (issue #16).
Registered on the ``bench`` group of :mod:`._cli`."""

from __future__ import annotations

import sys

import click

from deerflow_common import run
from deerflow_common.cli_types import FiniteFloatRange

from ._cli import (
    _emit,
    _run_or_exit,
    agents_option,
    bench,
    json_option,
    seed_option,
    slots_option,
)


@bench.command("research")
@click.option(
    "--system",
    type=click.Choice(["fork", "deerflow2", "ours"]),
    default=None,
    help="One system alone; default (or with --compare) all three, one after another.",
)
@click.option("--compare", is_flag=True, help="Run the three systems and print the claims table.")
@click.option(
    "--processes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 16),
    help="DeerFlow server processes (baselines) = agents (ours).",
)
@click.option(
    "--slots",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Slots per agent of the control plane.",
)
@click.option(
    "--duration",
    "duration_s",
    default=30.0,
    show_default=True,
    type=FiniteFloatRange(1.0, 3600.0),
    help="Seconds during which users arrive.",
)
@click.option(
    "--arrival",
    "arrival_per_s",
    default=0.7,
    show_default=True,
    type=FiniteFloatRange(0.01, 100.0),
    help="Research jobs started per second.",
)
@click.option(
    "--drain",
    "drain_s",
    default=25.0,
    show_default=True,
    type=FiniteFloatRange(1.0, 3600.0),
    help="After the arrivals, how long jobs may take to finish before they count failed.",
)
@click.option(
    "--llm-rpm",
    default=900.0,
    show_default=True,
    type=FiniteFloatRange(min=1),
    help="Requests/min of the LLM key every process and agent shares.",
)
@click.option(
    "--search-rpm",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(min=1),
    help="Requests/min of the search key every process and agent shares.",
)
@click.option(
    "--crawl-rpm",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(min=1),
    help="Requests/min of the crawl key every process and agent shares.",
)
@click.option(
    "--error-rate",
    default=0.05,
    show_default=True,
    type=FiniteFloatRange(0, 1),
    help="Share of provider requests answered 500/502/503.",
)
@click.option(
    "--time-scale",
    default=0.1,
    show_default=True,
    type=FiniteFloatRange(0.001, 1.0),
    help="The simulator's latencies, and the baselines' own time constants, x this.",
)
@click.option(
    "--llm-cap",
    default=4,
    show_default=True,
    type=click.IntRange(0, 1024),
    help="DeerFlow 2.0's max_concurrent_calls per process (0: off).",
)
@click.option(
    "--ours-priority",
    type=click.Choice(["progress", "none"]),
    default="progress",
    show_default=True,
    help="Task priorities the control plane's driver sets: how far each job has got, or none.",
)
@click.option(
    "--ours-tuner",
    type=click.Choice(["off", "observe", "on"]),
    default="observe",
    show_default=True,
    help="The control plane's --tuner (observe is the controller's default: no changes).",
)
@click.option(
    "--ours-tuner-interval-s",
    default=2.0,
    show_default=True,
    type=FiniteFloatRange(0.1, 60),
    help="The control plane's --tuner-interval-s.",
)
@click.option(
    "--ours-tuner-objective",
    type=click.Choice(["throughput", "latency", "cost"]),
    default="throughput",
    show_default=True,
    help="The control plane's --tuner-objective.",
)
@click.option(
    "--ours-slot-limit",
    default=0,
    show_default=True,
    type=click.IntRange(0, 1024),
    help="The control plane's --agent-slot-limit (0: each agent's --slots); where the tuner's "
    "slot knob starts.",
)
@seed_option(7)
@json_option
def bench_research(
    system: str | None, compare: bool, processes: int, slots: int, duration_s: float,
    arrival_per_s: float, drain_s: float, llm_rpm: float, search_rpm: float, crawl_rpm: float,
    error_rate: float, time_scale: float, llm_cap: int, ours_priority: str, ours_tuner: str,
    ours_tuner_interval_s: float, ours_tuner_objective: str, ours_slot_limit: int, seed: int,
    as_json: bool,
) -> None:  # fmt: skip
    """Research jobs (plan -> parallel steps of llm/search/crawl -> report) on the fork's
    executor, DeerFlow 2.0's and the control plane, against the seed's claimed gains."""
    from ._research import MAX_JOBS, SYSTEMS, research
    from ._research_systems import Providers
    from ._research_workload import WorkloadSpec

    if system is not None and compare:
        raise click.UsageError("--system runs one system; --compare runs all three: pick one")
    if duration_s * arrival_per_s > MAX_JOBS:
        raise click.UsageError(
            f"--duration x --arrival offers about {duration_s * arrival_per_s:.0f} jobs; at most "
            f"{MAX_JOBS:,} (shorten the run or lower the rate)"
        )
    try:
        result = _run_or_exit(
            research(
                systems=SYSTEMS if system is None else (system,),
                spec=WorkloadSpec(seed, duration_s, arrival_per_s),
                providers=Providers(llm_rpm, search_rpm, crawl_rpm, error_rate, time_scale, seed),
                processes=processes,
                slots=slots,
                drain_s=drain_s,
                llm_cap=llm_cap,
                progress_priority=ours_priority == "progress",
                tuner=(ours_tuner, ours_tuner_interval_s, ours_tuner_objective),
                slot_limit=ours_slot_limit,
            )
        )
    except RuntimeError as e:  # a baseline process or the simulator failed to run
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    _emit(result, as_json)


@bench.command("tuner")
@agents_option
@slots_option(64)
@click.option(
    "--hand-limits",
    default="8,16,32,64",
    show_default=True,
    help="The --agent-slot-limit values tried by hand (comma-separated).",
)
@click.option(
    "--hand-s",
    default=12.0,
    show_default=True,
    type=FiniteFloatRange(4, 600),
    help="Seconds each hand-set limit runs.",
)
@click.option(
    "--tuned-s",
    default=60.0,
    show_default=True,
    type=FiniteFloatRange(10, 1800),
    help="Seconds the tuner runs.",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(0.1, 60),
    help="The controller's --tuner-interval-s.",
)
@click.option(
    "--median",
    "median_s",
    default=0.05,
    show_default=True,
    type=FiniteFloatRange(0.001, 10),
    help="Median task duration (s) of the log-normal draw.",
)
@click.option(
    "--sigma",
    default=0.5,
    show_default=True,
    type=FiniteFloatRange(0, 3),
    help="Sigma of the log-normal task durations.",
)
@seed_option(1)
@json_option
def bench_tuner(
    agents: int,
    slots: int,
    hand_limits: str,
    hand_s: float,
    tuned_s: float,
    interval: float,
    median_s: float,
    sigma: float,
    seed: int,
    as_json: bool,
) -> None:
    """The tuner from 1 slot per agent against hand-tuned slot limits (io workload)."""
    from . import _tuner_bench

    try:
        limits = [int(x) for x in hand_limits.split(",") if x.strip()]
    except ValueError:
        limits = []
    if not limits or any(not 1 <= n <= 4096 for n in limits):
        raise click.BadParameter(
            "give whole numbers from 1 to 4096, comma-separated", param_hint="--hand-limits"
        )
    result = _tuner_bench.tuner(
        agents=agents,
        slots=slots,
        hand_limits=limits,
        hand_s=hand_s,
        tuned_s=tuned_s,
        interval_s=interval,
        median_s=median_s,
        sigma=sigma,
        seed=seed,
    )
    _emit(run(result), as_json)
