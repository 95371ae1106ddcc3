"""``deerflow bench ...`` and ``deerflow demo``: the commands ``deerflow`` registers from this
package. Each benchmark prints one JSON object (``--json``: on one line); the demo prints live
progress and a summary table, and exits 1 unless every task succeeded."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from deerflow_common import run
from deerflow_controller.client import DeerflowError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _run_or_exit(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; an SDK error becomes one line on stderr and exit code 1."""
    try:
        return run(coro)
    except DeerflowError as e:
        click.echo(f"error ({e.code.name if e.code else 'TASK'}): {e.message}", err=True)
        sys.exit(1)


# --------------------------------------------------------------------------- demo


@click.command()
@click.option(
    "--agents",
    default=2,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Local agent processes the embedded controller starts.",
)
@click.option(
    "--slots",
    default=16,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Slots of each agent.",
)
@click.option(
    "--reports",
    default=4,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Research reports in the DAG (each: plan, searches, crawls, a report).",
)
@click.option(
    "--time-scale",
    default=None,
    type=click.FloatRange(min=0.001),
    help="Multiplier on the simulated providers' docs/WORKLOAD.md latencies (1.0 = real time; "
    "default 0.2, with --deerflow 0.02).",
)
@click.option(
    "--llm-rpm",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="The simulated provider key's requests per minute (the limiter keeps under it).",
)
@click.option("--seed", default=7, show_default=True, help="Seed of every random draw.")
@click.option(
    "--deerflow",
    is_flag=True,
    help="Run the DeerFlow-shaped example instead: the drop-ins, sub-agents, a report from "
    "every step's findings (docs/DEERFLOW.md).",
)
@click.option(
    "--steps",
    default=3,
    show_default=True,
    type=click.IntRange(1, 8),
    help="With --deerflow: steps of the research plan.",
)
@click.option(
    "--topic",
    default="EV battery supply chains",
    show_default=True,
    help="With --deerflow: what the research is about.",
)
@click.option("--json", "as_json", is_flag=True, help="With --deerflow: a JSON summary.")
def demo(
    agents: int,
    slots: int,
    reports: int,
    time_scale: float | None,
    llm_rpm: float,
    seed: int,
    deerflow: bool,
    steps: int,
    topic: str,
    as_json: bool,
) -> None:
    """Run a DeerFlow-shaped research DAG: embedded controller, local agents, provider simulator."""
    if deerflow:
        from ._example_cli import example

        scale = 0.02 if time_scale is None else time_scale
        example(agents=agents, steps=steps, topic=topic, time_scale=scale, seed=seed, json=as_json)
        return
    from ._demo import run_demo, summary_table

    console = Console()
    report = _run_or_exit(
        run_demo(
            agents=agents,
            slots=slots,
            reports=reports,
            time_scale=0.2 if time_scale is None else time_scale,
            llm_rpm=llm_rpm,
            seed=seed,
            console=console,
        )
    )
    console.print(summary_table(report))
    if report.succeeded != report.tasks:
        sys.exit(1)


# --------------------------------------------------------------------------- benchmarks

json_option = click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
agents_option = click.option(
    "--agents",
    default=2,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Agent processes started.",
)


def tasks_option(default: int, *, most: int = 1_000_000) -> Callable[[F], F]:
    return click.option(
        "--tasks",
        default=default,
        show_default=True,
        type=click.IntRange(1, most),
        help="Tasks in the measured job.",
    )


def slots_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--slots",
        default=default,
        show_default=True,
        type=click.IntRange(1, 4096),
        help="Slots of each agent.",
    )


def seed_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--seed", default=default, show_default=True, help="Seed of every random draw."
    )


@click.group()
def bench() -> None:
    """Benchmarks on real local processes; each prints one JSON object."""


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(json.dumps(result, indent=2))


@bench.command("noop")
@tasks_option(20000)
@agents_option
@slots_option(64)
@click.option(
    "--prefetch",
    default=64,
    show_default=True,
    type=click.IntRange(0, 4096),
    help="The controller's --prefetch (least prefetch per agent).",
)
@json_option
def bench_noop(tasks: int, agents: int, slots: int, prefetch: int, as_json: bool) -> None:
    """No-op (echo) tasks end to end: submit to last result at the client."""
    from . import _throughput

    _emit(run(_throughput.noop(tasks, agents, slots, prefetch)), as_json)


@bench.command("io")
@tasks_option(5000)
@agents_option
@slots_option(64)
@click.option(
    "--prefetch",
    default=2,
    show_default=True,
    type=click.IntRange(0, 4096),
    help="The controller's --prefetch (least prefetch per agent).",
)
@click.option(
    "--median",
    "median_s",
    default=0.05,
    show_default=True,
    type=float,
    help="Median task duration (s) of the log-normal draw.",
)
@click.option(
    "--sigma",
    default=0.5,
    show_default=True,
    type=float,
    help="Sigma of the log-normal task durations.",
)
@seed_option(1)
@json_option
def bench_io(
    tasks: int,
    agents: int,
    slots: int,
    prefetch: int,
    median_s: float,
    sigma: float,
    seed: int,
    as_json: bool,
) -> None:
    """IO-bound tasks with log-normal latencies against perfect packing on the slots."""
    from . import _throughput

    _emit(run(_throughput.io(tasks, agents, slots, prefetch, median_s, sigma, seed)), as_json)


@bench.command("ratelimit")
@click.option(
    "--scenario",
    type=click.Choice(["overload", "ramp", "multinode", "unknown"]),
    required=True,
    help="overload: more LLM calls than the key allows; ramp: rising load against a slope "
    "limit; multinode: the shared limiter against per-agent caps; unknown: a provider that "
    "states no limit.",
)
@tasks_option(3000)
@click.option(
    "--rpm",
    default=6000.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Requests per minute of the simulated provider key.",
)
@click.option(
    "--agents", default=None, type=click.IntRange(1, 32), help="Default 2 (4 for multinode)."
)
@slots_option(64)
@click.option(
    "--time-scale",
    default=0.1,
    show_default=True,
    type=click.FloatRange(min=0.0001),
    help="Multiplier on the simulator's docs/WORKLOAD.md latencies.",
)
@click.option(
    "--per-agent-cap",
    default=16,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="multinode: LLM calls in flight per agent without the shared limiter.",
)
@click.option(
    "--peak-rps",
    default=100.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="ramp: offered load (requests/s) at the top of the ramp.",
)
@click.option(
    "--slope",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="ramp: the simulated key's burst slope limit.",
)
@click.option(
    "--provider",
    type=click.Choice(["llm", "search"]),
    default="llm",
    show_default=True,
    help="unknown: llm states its limit in headers; search says nothing but 429.",
)
@json_option
def bench_ratelimit_cmd(
    scenario: str, tasks: int, rpm: float, agents: int | None, slots: int, time_scale: float,
    per_agent_cap: int, peak_rps: float, slope: float, provider: str, as_json: bool,
) -> None:  # fmt: skip
    """Cluster-wide rate limiting against the provider simulator."""
    from . import _ratelimit as rl

    n_agents = agents or (4 if scenario == "multinode" else 2)
    if scenario == "overload":
        coro = rl.overload(tasks, rpm, n_agents, slots, time_scale)
    elif scenario == "ramp":
        coro = rl.ramp(peak_rps, 10.0, 10.0, slope, n_agents, slots, time_scale)
    elif scenario == "multinode":
        coro = rl.multinode(tasks, rpm, n_agents, slots, per_agent_cap, time_scale)
    else:
        coro = rl.unknown(tasks, rpm, n_agents, slots, time_scale, provider)
    _emit(rl.add_machine(run(coro)), as_json)


@bench.command("tracing")
@tasks_option(20000)
@agents_option
@click.option(
    "--rounds",
    default=15,
    show_default=True,
    type=click.IntRange(1, 50),
    help="Untraced and traced jobs, alternating A-B, B-A (single jobs swing by 20 points on "
    "a 2-core VM: medians need many).",
)
@click.option(
    "--export-batch",
    default=4096,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="OTEL_BSP_MAX_EXPORT_BATCH_SIZE of the traced daemons (the SDK default is 512).",
)
@json_option
def bench_tracing(tasks: int, agents: int, rounds: int, export_batch: int, as_json: bool) -> None:
    """No-op throughput with every task traced and exported (to a local OTLP receiver) against
    tracing off: two warm clusters, jobs alternating."""
    from ._tracing_overhead import tracing_overhead

    _emit(
        run(tracing_overhead(tasks=tasks, agents=agents, rounds=rounds, export_batch=export_batch)),
        as_json,
    )


@bench.command("predictor")
@click.option(
    "--records",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON lines of a real run's attempts (see deerflow_bench.Record) to score as well.",
)
@click.option(
    "--train",
    "train_n",
    default=4000,
    show_default=True,
    type=click.IntRange(1),
    help="Synthetic attempts the predictor learns from.",
)
@click.option(
    "--test",
    "test_n",
    default=4000,
    show_default=True,
    type=click.IntRange(1),
    help="Held-out attempts it is scored on.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of every random draw.")
@json_option
def bench_predictor_cmd(
    records: Path | None, train_n: int, test_n: int, seed: int, as_json: bool
) -> None:
    """Predictor accuracy (MdAPE on a held-out run) and per-call costs; in-process, no daemons."""
    from . import _predictor_accuracy as bp

    _emit(bp.run(records, train_n, test_n, seed), as_json)


@bench.command("skewed")
@tasks_option(160, most=100_000)
@agents_option
@slots_option(4)
@click.option(
    "--per-item",
    "per_item_s",
    default=0.01,
    show_default=True,
    type=float,
    help="Seconds of work per item of a task.",
)
@click.option(
    "--sigma",
    default=1.3,
    show_default=True,
    type=float,
    help="Sigma of the heavy-tailed items per task.",
)
@seed_option(1)
@click.option(
    "--warmup",
    default=40,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Tasks run first so the predictor has seen the handler (not measured).",
)
@json_option
def bench_skewed(
    tasks: int, agents: int, slots: int, per_item_s: float, sigma: float, seed: int,
    warmup: int, as_json: bool,
) -> None:  # fmt: skip
    """Heavy-tailed task durations against max(total / slots, longest)."""
    from . import _scheduling

    _emit(run(_scheduling.skewed(tasks, agents, slots, per_item_s, sigma, seed, warmup)), as_json)


@bench.command("dag")
@click.option(
    "--plans",
    default=20,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Research plans, each a chain plan -> searches -> crawls -> report.",
)
@click.option(
    "--searches",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Searches per plan.",
)
@agents_option
@slots_option(128)
@seed_option(1)
@json_option
def bench_dag(plans: int, searches: int, agents: int, slots: int, seed: int, as_json: bool) -> None:
    """Research-shaped DAGs against their critical path."""
    from . import _scheduling

    _emit(run(_scheduling.dag(plans, searches, agents, slots, seed)), as_json)


@bench.command("hetero")
@tasks_option(160, most=100_000)
@slots_option(4)
@click.option(
    "--per-item",
    "per_item_s",
    default=0.01,
    show_default=True,
    type=float,
    help="Seconds of work per item of a task.",
)
@click.option(
    "--sigma",
    default=1.0,
    show_default=True,
    type=float,
    help="Sigma of the heavy-tailed items per task.",
)
@seed_option(1)
@click.option(
    "--warmup",
    default=40,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Tasks run first so the predictor has seen the handler (not measured).",
)
@json_option
def bench_hetero(
    tasks: int, slots: int, per_item_s: float, sigma: float, seed: int, warmup: int,
    as_json: bool,
) -> None:  # fmt: skip
    """Two agents, one half as fast, against the capacity-weighted bound."""
    from . import _scheduling

    _emit(run(_scheduling.hetero(tasks, slots, per_item_s, sigma, seed, warmup)), as_json)


@bench.command("brownout")
@tasks_option(600, most=100_000)
@agents_option
@slots_option(32)
@click.option(
    "--error-rate",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of requests the simulator fails with 5xx during the brownout.",
)
@click.option(
    "--window",
    "window_s",
    default=10.0,
    show_default=True,
    type=float,
    help="Seconds the brownout lasts (work is offered for twice that).",
)
@seed_option(1)
@json_option
def bench_brownout(
    tasks: int, agents: int, slots: int, error_rate: float, window_s: float, seed: int,
    as_json: bool,
) -> None:  # fmt: skip
    """Transient provider errors for a window: share that eventually succeeds, attempts/task."""
    from . import _scheduling

    _emit(run(_scheduling.brownout(tasks, agents, slots, error_rate, window_s, seed)), as_json)


@bench.command("cache")
@seed_option(7)
@click.option(
    "--jobs",
    default=3000,
    show_default=True,
    type=click.IntRange(10, 1_000_000),
    help="Research jobs drawn from the repetition model.",
)
@click.option(
    "--entries",
    default=100_000,
    show_default=True,
    type=click.IntRange(100, 10**7),
    help="Cache entries for the lookup-latency measurement.",
)
@click.option(
    "--lookups",
    default=20_000,
    show_default=True,
    type=click.IntRange(100, 10**7),
    help="Lookups timed at that size.",
)
@click.option(
    "--threshold",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="Similarity threshold of the main run (default: DEFAULT_SIMILARITY_THRESHOLD).",
)
@json_option
def bench_cache_cmd(
    seed: int, jobs: int, entries: int, lookups: int, threshold: float | None, as_json: bool
) -> None:
    """The result cache, offline, on docs/WORKLOAD.md's repetition model: hit rate by layer against
    the oracle, false hits, lookup latency at 100,000 entries, bytes per entry."""
    from ._cache_bench import cache_bench

    _emit(cache_bench(seed, jobs, entries, lookups, threshold=threshold), as_json)


@bench.command("inputs")
@click.option(
    "--sizes-mb",
    default="0.1,1,10,30",
    show_default=True,
    help="Output sizes to hand over, in MB (10^6 bytes), comma-separated.",
)
@click.option(
    "--rounds",
    default=9,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Hand-overs measured per size.",
)
@agents_option
@json_option
def bench_inputs_cmd(sizes_mb: str, rounds: int, agents: int, as_json: bool) -> None:
    """Cost per MB of handing a dependency's output to its dependent (Task(inputs=...))."""
    from ._inputs_bench import inputs_bench

    try:
        sizes = [float(s) for s in sizes_mb.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{sizes_mb!r} is not a list of numbers") from None
    if not sizes or not all(0 < s <= 32 for s in sizes):
        raise click.BadParameter("give sizes above 0 and at most 32 MB", param_hint="--sizes-mb")
    _emit(run(inputs_bench(sizes, rounds, agents)), as_json)


# More benchmarks, by concept, each registering itself on `bench` when imported: the client's
# side (SDK throughput, latency) in _cli_client.py, high availability (failover, the journal) in
# _cli_ha.py, issue #16's (the research comparison, the tuner) in _cli_seed.py, issue #19's
# scale, start-up and instruction counts in _cli_scale.py, _cli_startup.py and
# _cli_instructions.py.
from . import (  # noqa: E402, F401
    _cli_client,
    _cli_ha,
    _cli_instructions,
    _cli_scale,
    _cli_seed,
    _cli_startup,
)
