"""``deerflow``: the operator's command line (jobs, agents, stats, the live view, the provider
simulator). ``deerflow bench ...`` and ``deerflow demo`` come from the bench package
(``deerflow_bench``, the ``bench`` extra) when it is installed."""

from __future__ import annotations

# Before anything imports grpc, which reads its experiments once on import.
from deerflow_common.grpc_endpoints import use_classic_endpoints

use_classic_endpoints()

import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from deerflow_common import run, setup_logging
from deerflow_common.cli_types import FiniteFloatRange
from deerflow_common.tls import (
    CA_ENV,
    CERT_ENV,
    DEFAULT_DAYS,
    KEY_ENV,
    CertificateDir,
    TlsError,
    TlsFiles,
    load,
    make_certificates,
)
from deerflow_controller.client import DEFAULT_ADDRESS, AsyncClient, DeerflowError, TaskEvent
from deerflow_controller.jobfile import JobFileError, load_tasks
from deerflow_controller.jobs_cli import as_dict, print_job, print_jobs
from deerflow_controller.token_cli import token as token_group
from deerflow_controller.top import top as top_command
from deerflow_simulator.cli import sim as sim_command

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_controller_option = click.option(
    "--controller",
    "address",
    default=DEFAULT_ADDRESS,
    envvar="DEERFLOW_CONTROLLER",
    show_default=True,
    help="Controller address host:port, or several comma-separated (HA: the client finds the "
    "leader) (env DEERFLOW_CONTROLLER).",
)
_TOKEN = "deerflow.token"


def _keep_token(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta[_TOKEN] = value or None


_token_option = click.option(
    "--token",
    envvar="DEERFLOW_TOKEN",
    default=None,
    expose_value=False,
    callback=_keep_token,
    help="Bearer token for a controller that authenticates clients (env DEERFLOW_TOKEN; the "
    "environment keeps it out of the process list).",
)


# -- TLS to the controller (docs/SECURITY.md): stored in the context, read by _client --
def _tls_option(flag: str, envvar: str, what: str) -> Callable[[F], F]:
    def keep(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.meta.setdefault("deerflow.tls", {})[param.name] = value

    return click.option(
        flag,
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=envvar,
        expose_value=False,
        callback=keep,
        help=f"{what} (env {envvar}).",
    )


def address_option(command: F) -> F:
    """``--controller``, ``--token`` (what to show it) and the TLS flags ``--tls-ca``,
    ``--tls-cert``, ``--tls-key``."""
    for option in (
        _tls_option("--tls-key", KEY_ENV, "PEM private key of --tls-cert"),
        _tls_option(
            "--tls-cert", CERT_ENV, "PEM client certificate, for a controller under mutual TLS"
        ),
        _tls_option("--tls-ca", CA_ENV, "PEM CA certificates: talk TLS, verify the controller"),
        _token_option,
        _controller_option,
    ):
        command = option(command)
    return command


def _client(address: str) -> AsyncClient:
    """The SDK client of a command: the token of ``--token``/DEERFLOW_TOKEN if any; TLS when a
    --tls-* flag (or $DEERFLOW_TLS_*) says so, a bad file being a usage error naming its flag."""
    meta = click.get_current_context().meta
    given: dict[str, Path] = meta.get("deerflow.tls", {})
    tls = TlsFiles(given.get("tls_cert"), given.get("tls_key"), given.get("tls_ca"))
    try:
        load(tls)
    except TlsError as e:
        raise click.UsageError(str(e)) from None
    return AsyncClient(address, token=meta.get(_TOKEN), tls=tls if tls.given else None)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn SDK errors into a one-line message and exit code 1."""
    try:
        return run(coro)
    except DeerflowError as e:
        code = e.code.name if e.code is not None else "TASK"
        click.echo(f"error ({code}): {e.message}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    help="Log level of the command line and the SDK (DEBUG, INFO, WARNING, ...).",
)
def main(log_level: str) -> None:
    """deerflow-parallel: run DeerFlow's parallel work across many machines."""
    setup_logging("deerflow", log_level)


# --------------------------------------------------------------------------- jobs


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@address_option
@click.option("--job-id", default="", help="Idempotency key for the job.")
@click.option("--name", default="", help="Name of the job [default: the file's name].")
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
        async with _client(address) as client:
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
        async with _client(address) as client:
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
        async with _client(address) as client:
            return await client.cancel(job_id, task_ids, reason="deerflow cancel")

    click.echo(f"cancelled {_run(go())} tasks")


# --------------------------------------------------------------------------- inspection


@main.command()
@address_option
@click.option(
    "--state",
    type=click.Choice(["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"], case_sensitive=False),
    default=None,
    help="Only jobs in this state.",
)
@click.option(
    "--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="Jobs per page."
)
@click.option("--cursor", default="", help="Where the page before ended (printed after it).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: jobs, next_cursor, held.")
def jobs(address: str, state: str | None, limit: int, cursor: str, as_json: bool) -> None:
    """List the jobs the controller holds, newest first: state, tasks by state, age, tenant."""

    async def go() -> Any:
        async with _client(address) as client:
            return await client.list_jobs(limit=limit, cursor=cursor, state=state or "")

    page = _run(go())
    if as_json:
        click.echo(json.dumps(as_dict(page)))
        return
    print_jobs(Console(), page, address)


@main.command()
@click.argument("job_id")
@address_option
@click.option(
    "--limit",
    type=click.IntRange(1, 2000),
    default=500,
    show_default=True,
    help="Tasks to show (a page; --offset for the next).",
)
@click.option("--offset", type=click.IntRange(0), default=0, help="The first task to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: job, tasks (events too).")
def job(job_id: str, address: str, limit: int, offset: int, as_json: bool) -> None:
    """Show one job's tasks (attempts, agent, predicted and actual run time, cache layer, trace
    id) and each failure with its error and the controller's detail."""

    async def go() -> Any:
        async with _client(address) as client:
            return await client.job_detail(job_id, task_limit=limit, task_offset=offset)

    detail = _run(go())
    if as_json:
        click.echo(json.dumps(as_dict(detail)))
        return
    print_job(Console(), detail)


@main.command()
@address_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, an object per agent.")
def agents(address: str, as_json: bool) -> None:
    """List the agents connected to the controller."""

    async def go() -> list[Any]:
        async with _client(address) as client:
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
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object, with the tuner's whole history."
)
def stats(address: str, as_json: bool) -> None:
    """Show the controller's counters."""

    async def go() -> Any:
        async with _client(address) as client:
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
    if s.HasField("tuning"):
        detail["tuner"] = _tuning(s.tuning)
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
    console = Console()
    console.print(table)
    if s.HasField("tuning"):
        _print_tuning(console, s.tuning)


TUNING_ROWS = 20
"""The latest tuner changes ``deerflow stats`` prints (``--json`` has the whole history)."""


def _tuning(t: Any) -> dict[str, Any]:
    return {
        "mode": t.mode,
        "objective": t.objective,
        "converged": t.converged,
        "knobs": {
            k.name: {"value": k.value, "floor": k.floor, "ceiling": k.ceiling} for k in t.knobs
        },
        "history": [
            {
                "seq": c.seq,
                "at": c.at,
                "knob": c.knob,
                "old": c.old_value,
                "new": c.new_value,
                "reason": c.reason,
                "before": c.before,
                "before_detail": c.before_detail,
                "after": c.after if c.judged else None,
                "after_detail": c.after_detail,
                "outcome": c.outcome,
                "verdict": c.verdict,
            }
            for c in t.history
        ],
    }


def _print_tuning(console: Console, t: Any) -> None:
    knobs = ", ".join(f"{k.name}={k.value} [{k.floor}..{k.ceiling}]" for k in t.knobs)
    state = "converged" if t.converged else "climbing"
    console.print(f"tuner: {t.mode}, objective {t.objective}, {state}; {knobs or 'no knobs yet'}")
    if not t.history:
        return
    table = Table(title=f"tuner history (last {min(TUNING_ROWS, len(t.history))})")
    for col in ("#", "knob", "change", "outcome", "before", "after", "why"):
        table.add_column(col)
    for c in list(t.history)[-TUNING_ROWS:]:
        after = f"{c.after:.4g}" if c.judged else ""
        why = c.reason + (f"; {c.verdict}" if c.verdict else "")
        table.add_row(
            str(c.seq),
            c.knob,
            f"{c.old_value} -> {c.new_value}",
            c.outcome,
            f"{c.before:.4g}",
            after,
            why,
        )
    console.print(table)


# The provider simulator: DeerFlow's LLM, search and reader APIs with their limits, for the
# demo, benchmarks and tests (deerflow_simulator).
# --------------------------------------------------------------------------- certificates


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME",
    help="A DNS name or IP address clients reach the controller at (repeatable); localhost, "
    "127.0.0.1 and ::1 are always in its certificate.",
)
@click.option(
    "--agent",
    "agents",
    multiple=True,
    metavar="ID",
    help="Make a client certificate for agent ID (repeatable): CN ID, URI SAN "
    "urn:deerflow:agent:ID.",
)
@click.option(
    "--days",
    default=DEFAULT_DAYS,
    show_default=True,
    type=click.IntRange(1, 3650),
    help="Validity of every certificate made.",
)
@click.option(
    "--new-ca", is_flag=True, help="Make a new CA even if DIRECTORY has one (ca.pem, ca.key)."
)
def certs(
    directory: Path, hosts: tuple[str, ...], agents: tuple[str, ...], days: int, new_ca: bool
) -> None:
    """Make a local CA and the certificates of a test cluster in DIRECTORY: controller.pem,
    client.pem, agent-ID.pem (each with its .key, 0600). An existing CA there is reused (the
    controller and client certificates are made anew), so running it again with new --agent ids
    adds agents. For production, prefer your own CA (docs/SECURITY.md)."""
    for agent_id in agents:
        if (
            not agent_id
            or len(agent_id) > 128
            or not all(c.isalnum() or c in "-_." for c in agent_id)
        ):
            raise click.BadParameter(
                f"{agent_id[:64]!r} is not an agent id of 1-128 letters, digits, '-', '_', '.'",
                param_hint="--agent",
            )
    try:
        written = make_certificates(directory, hosts=hosts, agents=agents, days=days, new_ca=new_ca)
    except (OSError, ValueError) as e:
        click.echo(f"error: cannot write certificates in {directory}: {e}", err=True)
        sys.exit(1)
    for path in written:
        click.echo(path)
    d = CertificateDir(directory)
    click.echo(
        f"controller: --tls-cert {d.pair('controller')[0]} --tls-key {d.pair('controller')[1]}"
        f" [--tls-client-ca {d.ca}]\n"
        f"agents:     --tls-ca {d.ca} [--tls-cert {directory}/agent-ID.pem "
        f"--tls-key {directory}/agent-ID.key]\n"
        f"clients:    DEERFLOW_TLS_CA={d.ca} [DEERFLOW_TLS_CERT={d.pair('client')[0]} "
        f"DEERFLOW_TLS_KEY={d.pair('client')[1]}]",
        err=True,
    )


main.add_command(sim_command, name="sim")
main.add_command(token_group, name="token")

# The live terminal view of a controller's numbers.
main.add_command(top_command, name="top")

BENCH_EXTRA_HINT = (
    "pip install 'deerflow-parallel[bench]' (in a checkout: make venv, or uv sync --extra bench)"
)


def _needs_bench_extra(name: str, summary: str) -> click.Command:
    """A stand-in for a command of the bench package when it is not installed: whatever the
    arguments (``--help`` included), it says in one line what to install, and exits 1."""

    @click.command(
        name,
        help=f"{summary} (needs the bench extra).",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def stand_in() -> None:
        click.echo(f"error: `deerflow {name}` needs the bench extra: {BENCH_EXTRA_HINT}", err=True)
        sys.exit(1)

    return stand_in


def _bench_commands() -> tuple[click.Command, click.Command]:
    """``deerflow bench`` and ``deerflow demo`` from the bench package, or their stand-ins."""
    try:
        from deerflow_bench import bench, demo
    except ModuleNotFoundError as e:
        if e.name != "deerflow_bench":
            raise  # installed, but something it needs is missing: say that, not "install it"
        return (
            _needs_bench_extra("bench", "Benchmarks on real local processes"),
            _needs_bench_extra("demo", "Run a DeerFlow-shaped research DAG locally"),
        )
    return bench, demo


# Benchmarks and the embedded demo live in their own distribution (bench/, deerflow_bench).
bench_group, demo_command = _bench_commands()
main.add_command(bench_group, name="bench")
main.add_command(demo_command, name="demo")


if __name__ == "__main__":
    main()
