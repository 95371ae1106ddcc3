"""``deerflow``: the operator's and developer's command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from deerflow_common import run, setup_logging
from deerflow_common.cli_types import FiniteFloatRange
from deerflow_simulator.cli import sim as sim_command

from . import bench as benchmarks
from .client import DEFAULT_ADDRESS, AsyncClient, DeerflowError, TaskEvent
from .demo import run_demo, summary_table
from .jobfile import JobFileError, load_tasks
from .top import top as top_command

T = TypeVar("T")

address_option = click.option(
    "--controller",
    "address",
    default=DEFAULT_ADDRESS,
    envvar="DEERFLOW_CONTROLLER",
    show_default=True,
    help="Controller address host:port, or several comma-separated (HA: the client finds the "
    "leader) (env DEERFLOW_CONTROLLER).",
)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn SDK errors into a one-line message and exit code 1."""
    try:
        return run(coro)
    except DeerflowError as e:
        code = e.code.name if e.code is not None else "TASK"
        click.echo(f"error ({code}): {e.message}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="WARNING", show_default=True)
def main(log_level: str) -> None:
    """deerflow-parallel: run DeerFlow's parallel work across many machines."""
    setup_logging("deerflow", log_level)


# --------------------------------------------------------------------------- demo


@main.command()
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--slots", default=16, show_default=True, type=click.IntRange(1, 1024))
@click.option("--reports", default=4, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--time-scale",
    default=0.2,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Multiplier on the simulated providers' docs/WORKLOAD.md latencies (1.0 = real time).",
)
@click.option(
    "--llm-rpm",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="The simulated provider key's requests per minute (the limiter keeps under it).",
)
@click.option("--seed", default=7, show_default=True)
def demo(
    agents: int, slots: int, reports: int, time_scale: float, llm_rpm: float, seed: int
) -> None:
    """Run a DeerFlow-shaped research DAG: embedded controller, local agents, provider simulator."""
    console = Console()
    report = _run(
        run_demo(
            agents=agents,
            slots=slots,
            reports=reports,
            time_scale=time_scale,
            llm_rpm=llm_rpm,
            seed=seed,
            console=console,
        )
    )
    console.print(summary_table(report))
    if report.succeeded != report.tasks:
        sys.exit(1)


# --------------------------------------------------------------------------- jobs


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@address_option
@click.option("--job-id", default="", help="Idempotency key for the job.")
@click.option("--name", default="")
@click.option("--wait/--no-wait", default=False, help="Stream results until the job is done.")
@click.option(
    "--deadline",
    type=FiniteFloatRange(0, 7 * 86400),
    default=0.0,
    help="Seconds after the controller accepts the job by which every task must have ended;"
    " unfinished tasks then end TIMED_OUT (0 = no deadline, at most 7 days).",
)
def submit(file: Path, address: str, job_id: str, name: str, wait: bool, deadline: float) -> None:
    """Submit the tasks in FILE (JSON array or JSONL) as one job; print the job id."""
    try:
        tasks = load_tasks(file)
    except JobFileError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)

    async def go() -> int:
        async with AsyncClient(address) as client:
            job = await client.submit(
                tasks, job_id=job_id, name=name or file.name, deadline_s=deadline
            )
            click.echo(job.job_id)
            if not wait:
                return 0
            failed = 0
            async for r in job.results():
                failed += not r.ok
                _print_result(r.task_id, r.state, r.output, r.error)
            return 1 if failed else 0

    sys.exit(_run(go()))


def _print_result(task_id: str, state: str, output: bytes, error: str) -> None:
    detail = error if error else output[:200].decode(errors="replace")
    click.echo(f"{task_id}\t{state}\t{detail}")


def event_line(ev: TaskEvent) -> str:
    """One event as five tab-separated columns: task, state, where (attempt, agent, predicted
    run time, cache layer), why (the error and the controller's detail sentence) and, on a
    terminal event, the output."""
    where = [f"attempt {ev.attempt}" + (f" on {ev.agent_id}" if ev.agent_id else "")]
    if ev.predicted_s:
        p = ev.predicted_s
        where.append(f"predicted {p:.2f} s" if p >= 1 else f"predicted {p * 1000:.3g} ms")
    if ev.cache_layer:
        where.append(f"from the {ev.cache_layer} cache")
    why = "; ".join(x for x in (ev.error, ev.detail) if x)
    output = ev.output[:200].decode(errors="replace") if ev.terminal and not ev.error else ""
    return "\t".join((ev.task_id, ev.state, ", ".join(where), why, output))


@main.command()
@click.argument("job_id")
@address_option
@click.option(
    "--all-events",
    is_flag=True,
    help="Show every state change, not only results: task, state, attempt/agent/predicted "
    "run time/cache layer, error and detail, output (tab-separated).",
)
def watch(job_id: str, address: str, all_events: bool) -> None:
    """Stream a job's results (or all its events) until it is done."""

    async def go() -> int:
        failed = 0
        async with AsyncClient(address) as client:
            async for ev in client.events(job_id, terminal_only=not all_events):
                if ev.terminal:
                    failed += ev.state != "SUCCEEDED"
                if all_events:
                    click.echo(event_line(ev))
                elif ev.terminal:
                    _print_result(ev.task_id, ev.state, ev.output, ev.error)
        return 1 if failed else 0

    sys.exit(_run(go()))


@main.command()
@click.argument("job_id")
@click.argument("task_ids", nargs=-1)
@address_option
def cancel(job_id: str, task_ids: tuple[str, ...], address: str) -> None:
    """Cancel a job, or some of its tasks."""

    async def go() -> int:
        async with AsyncClient(address) as client:
            return await client.cancel(job_id, task_ids, reason="deerflow cancel")

    click.echo(f"cancelled {_run(go())} tasks")


# --------------------------------------------------------------------------- inspection


@main.command()
@address_option
@click.option("--json", "as_json", is_flag=True)
def agents(address: str, as_json: bool) -> None:
    """List the agents connected to the controller."""

    async def go() -> list[Any]:
        async with AsyncClient(address) as client:
            return await client.agents()

    rows = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "agent_id": a.agent_id,
                        "handlers": list(a.handlers),
                        "slots": a.slots,
                        "in_flight": a.in_flight,
                        "running": a.running,
                        "cpu_percent": a.cpu_percent,
                        "process_cpu_percent": a.process_cpu_percent,
                        "memory_percent": a.memory_percent,
                        "draining": a.draining,
                        "completed": a.completed,
                    }
                    for a in rows
                ]
            )
        )
        return
    table = Table(title=f"agents at {address}")
    columns = ("agent", "handlers", "slots", "in flight", "running", "agent cpu %", "host cpu %")
    for col in (*columns, "host mem %", "state"):
        table.add_column(col)
    for a in rows:
        table.add_row(
            a.agent_id,
            ", ".join(a.handlers),
            str(a.slots),
            str(a.in_flight),
            str(a.running),
            f"{a.process_cpu_percent:.0f}",
            f"{a.cpu_percent:.0f}",
            f"{a.memory_percent:.0f}",
            "draining" if a.draining else "active",
        )
    Console().print(table)


@main.command()
@address_option
@click.option("--json", "as_json", is_flag=True)
def stats(address: str, as_json: bool) -> None:
    """Show the controller's counters."""

    async def go() -> Any:
        async with AsyncClient(address) as client:
            return await client.stats()

    s = _run(go())
    data = {
        "controller_id": s.controller_id,
        "epoch": s.epoch,
        "uptime_s": round(s.uptime_s, 1),
        "agents": s.agents,
        "jobs_active": s.jobs_active,
        "queued": s.queued,
        "submitted": s.submitted,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "cancelled": s.cancelled,
        "timed_out": s.timed_out,
        "retries": s.retries,
        "completed_per_s": round(s.completed_per_s, 1),
        "schedule_timeouts": s.schedule_timeouts,
        "heartbeat_timeouts": s.heartbeat_timeouts,
        "split_tasks": s.split_tasks,
        "moved_off_lagging_agents": s.stolen,
        "cache_hit_rate": round(s.cache.hit_rate, 4),
        "cache_hits": dict(s.cache.hits),
        "cache_entries": s.cache.entries,
    }
    predictions = {
        h.name: {"n": h.predictions, "mdape": round(h.mdape, 3), "median_s": h.median_s}
        for h in s.handlers
        if h.predictions
    }
    detail: dict[str, Any] = {
        "predictions": predictions,
        "circuits": [
            {"key": c.key, "state": c.state, "trips": c.trips, "reason": c.reason}
            for c in s.circuits
        ],
        "quarantined": [
            {"agent": q.agent_id, "handler": q.handler, "reason": q.reason} for q in s.quarantined
        ],
    }
    if as_json:
        click.echo(json.dumps({**data, **detail}))
        return
    table = Table(title=f"controller {s.controller_id}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in data.items():
        table.add_row(k, str(v))
    for name, p in predictions.items():
        table.add_row(f"prediction error {name}", f"{p['mdape']:.0%} over {p['n']}")
    for c in s.circuits:
        table.add_row(f"circuit {c.key}", f"{c.state} ({c.trips} trips)")
    for q in s.quarantined:
        table.add_row(f"quarantined {q.agent_id}/{q.handler}", q.reason)
    Console().print(table)


# --------------------------------------------------------------------------- benchmarks


@main.group()
def bench() -> None:
    """Benchmarks on real local processes; each prints one JSON object."""


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(json.dumps(result, indent=2))


@bench.command("noop")
@click.option("--tasks", default=20000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--slots", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--prefetch", default=64, show_default=True, type=click.IntRange(0, 4096))
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_noop(tasks: int, agents: int, slots: int, prefetch: int, as_json: bool) -> None:
    """No-op (echo) tasks end to end: submit to last result at the client."""
    _emit(run(benchmarks.noop(tasks, agents, slots, prefetch)), as_json)


@bench.command("io")
@click.option("--tasks", default=5000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--slots", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--prefetch",
    default=2,
    show_default=True,
    type=click.IntRange(0, 4096),
    help="The controller's --prefetch (least prefetch per agent).",
)
@click.option("--median", "median_s", default=0.05, show_default=True, type=float)
@click.option("--sigma", default=0.5, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
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
    _emit(run(benchmarks.io(tasks, agents, slots, prefetch, median_s, sigma, seed)), as_json)


@bench.command("ratelimit")
@click.option(
    "--scenario",
    type=click.Choice(["overload", "ramp", "multinode", "unknown"]),
    required=True,
)
@click.option("--tasks", default=3000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--rpm", default=6000.0, show_default=True, type=click.FloatRange(min=1))
@click.option(
    "--agents", default=None, type=click.IntRange(1, 32), help="Default 2 (4 for multinode)."
)
@click.option("--slots", default=64, show_default=True, type=click.IntRange(1, 4096))
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
@click.option("--peak-rps", default=100.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--slope", default=0.5, show_default=True, type=click.FloatRange(min=0.01))
@click.option(
    "--provider",
    type=click.Choice(["llm", "search"]),
    default="llm",
    show_default=True,
    help="unknown: llm states its limit in headers; search says nothing but 429.",
)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_ratelimit_cmd(
    scenario: str, tasks: int, rpm: float, agents: int | None, slots: int, time_scale: float,
    per_agent_cap: int, peak_rps: float, slope: float, provider: str, as_json: bool,
) -> None:  # fmt: skip
    """Cluster-wide rate limiting against the provider simulator."""
    from . import bench_ratelimit as rl

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


@bench.command("failover")
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(0, 20),
    help="Rounds of the agent-loss and first-dispatch measurements (0 skips them).",
)
@click.option(
    "--kills",
    default=10,
    show_default=True,
    type=click.IntRange(0, 200),
    help="Leader SIGKILLs under a streaming client, on one cluster (0 skips them).",
)
@click.option(
    "--colocated-fraction",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Share of the kills that also SIGKILL the agent on the leader's node.",
)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_failover_cmd(rounds: int, kills: int, colocated_fraction: float, as_json: bool) -> None:
    """Agent SIGKILL -> its tasks running elsewhere; leader SIGKILL -> first dispatch by the
    new leader (a local etcd, 2 controllers, 2 agents); then leader SIGKILLs (some with an agent
    on the same node) -> the first result a streaming client receives from the new leader
    (2 controllers, 3 agents)."""
    from . import bench_failover

    _emit(run(bench_failover.failover(rounds, kills, colocated_fraction)), as_json)


@bench.command("journal")
@click.option("--tasks", default=20000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--slots", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--prefetch", default=64, show_default=True, type=click.IntRange(0, 4096))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_journal_cmd(
    tasks: int, agents: int, slots: int, prefetch: int, rounds: int, as_json: bool
) -> None:
    """No-op throughput with the etcd journal (HA leader) against embedded mode, alternating."""
    from . import bench_failover

    _emit(run(bench_failover.journal(tasks, agents, slots, prefetch, rounds)), as_json)


@bench.command("tracing")
@click.option("--tasks", default=20000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
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
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_tracing(tasks: int, agents: int, rounds: int, export_batch: int, as_json: bool) -> None:
    """No-op throughput with every task traced and exported (to a local OTLP receiver) against
    tracing off: two warm clusters, jobs alternating."""
    from .observability import tracing_overhead

    _emit(
        run(tracing_overhead(tasks=tasks, agents=agents, rounds=rounds, export_batch=export_batch)),
        as_json,
    )


@bench.command("predictor")
@click.option(
    "--records",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON lines of a real run's attempts (see bench_predictor.Record) to score as well.",
)
@click.option("--train", "train_n", default=4000, show_default=True, type=click.IntRange(1))
@click.option("--test", "test_n", default=4000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_predictor_cmd(
    records: Path | None, train_n: int, test_n: int, seed: int, as_json: bool
) -> None:
    """Predictor accuracy (MdAPE on a held-out run) and per-call costs; in-process, no daemons."""
    from . import bench_predictor as bp

    _emit(bp.run(records, train_n, test_n, seed), as_json)


@bench.command("skewed")
@click.option("--tasks", default=160, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--slots", default=4, show_default=True, type=click.IntRange(1, 4096))
@click.option("--per-item", "per_item_s", default=0.01, show_default=True, type=float)
@click.option("--sigma", default=1.3, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True)
@click.option("--warmup", default=40, show_default=True, type=click.IntRange(0, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_skewed(
    tasks: int, agents: int, slots: int, per_item_s: float, sigma: float, seed: int,
    warmup: int, as_json: bool,
) -> None:  # fmt: skip
    """Heavy-tailed task durations against max(total / slots, longest)."""
    from . import bench_sched

    _emit(run(bench_sched.skewed(tasks, agents, slots, per_item_s, sigma, seed, warmup)), as_json)


@bench.command("dag")
@click.option("--plans", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--searches", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--slots", default=128, show_default=True, type=click.IntRange(1, 4096))
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_dag(plans: int, searches: int, agents: int, slots: int, seed: int, as_json: bool) -> None:
    """Research-shaped DAGs against their critical path."""
    from . import bench_sched

    _emit(run(bench_sched.dag(plans, searches, agents, slots, seed)), as_json)


@bench.command("hetero")
@click.option("--tasks", default=160, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--slots", default=4, show_default=True, type=click.IntRange(1, 4096))
@click.option("--per-item", "per_item_s", default=0.01, show_default=True, type=float)
@click.option("--sigma", default=1.0, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True)
@click.option("--warmup", default=40, show_default=True, type=click.IntRange(0, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_hetero(
    tasks: int, slots: int, per_item_s: float, sigma: float, seed: int, warmup: int,
    as_json: bool,
) -> None:  # fmt: skip
    """Two agents, one half as fast, against the capacity-weighted bound."""
    from . import bench_sched

    _emit(run(bench_sched.hetero(tasks, slots, per_item_s, sigma, seed, warmup)), as_json)


@bench.command("brownout")
@click.option("--tasks", default=600, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--agents", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--slots", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--error-rate", default=0.3, show_default=True, type=click.FloatRange(0, 1))
@click.option("--window", "window_s", default=10.0, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_brownout(
    tasks: int, agents: int, slots: int, error_rate: float, window_s: float, seed: int,
    as_json: bool,
) -> None:  # fmt: skip
    """Transient provider errors for a window: share that eventually succeeds, attempts/task."""
    from . import bench_sched

    _emit(run(bench_sched.brownout(tasks, agents, slots, error_rate, window_s, seed)), as_json)


@bench.command("cache")
@click.option("--seed", default=7, show_default=True)
@click.option("--jobs", default=3000, show_default=True, type=click.IntRange(10, 1_000_000))
@click.option("--entries", default=100_000, show_default=True, type=click.IntRange(100, 10**7))
@click.option("--lookups", default=20_000, show_default=True, type=click.IntRange(100, 10**7))
@click.option(
    "--threshold",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="Similarity threshold of the main run (default: DEFAULT_SIMILARITY_THRESHOLD).",
)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_cache_cmd(
    seed: int, jobs: int, entries: int, lookups: int, threshold: float | None, as_json: bool
) -> None:
    """The result cache, offline, on docs/WORKLOAD.md's repetition model: hit rate by layer against
    the oracle, false hits, lookup latency at 100,000 entries, bytes per entry."""
    from .bench_cache import cache_bench

    _emit(cache_bench(seed, jobs, entries, lookups, threshold=threshold), as_json)


# The provider simulator: DeerFlow's LLM, search and reader APIs with their limits, for the
# demo, benchmarks and tests (deerflow_simulator).
main.add_command(sim_command, name="sim")

# The live terminal view of a controller's numbers.
main.add_command(top_command, name="top")


if __name__ == "__main__":
    main()
