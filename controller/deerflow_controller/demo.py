"""The embedded demo: a DeerFlow-shaped research DAG on a local cluster, with live progress.

Each report follows DeerFlow's pipeline (WORKLOAD.md): coordinator (llm) and background search,
planner (llm) returning 3 steps, then research steps that each loop through LLM turns fanning
out to searches and crawls, a Python step, and a reporter (llm). Unlike DeerFlow, the steps of a
plan and the reports run in parallel. Latencies are WORKLOAD.md's log-normal medians scaled down
(``--time-scale``) so the demo finishes in seconds; tool calls run the built-in ``sleep`` handler
and the Python step the ``cpu`` handler until the provider handlers land.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .client import AsyncClient, Task
from .launcher import Cluster

# (median seconds, sigma) per kind, from WORKLOAD.md
LATENCY = {
    "llm": (2.5, 0.6),
    "search": (1.2, 0.5),
    "crawl": (5.5, 0.7),
}


@dataclass
class DemoReport:
    tasks: int
    succeeded: int
    failed: int
    cancelled: int
    retries: int
    wall_s: float
    serial_s: float
    critical_path_s: float
    by_kind: Counter[str]

    @property
    def throughput(self) -> float:
        return self.tasks / self.wall_s if self.wall_s else 0.0


def critical_path(tasks: list[Task]) -> float:
    """Longest chain of task durations through the DAG: no schedule can finish sooner."""
    finish: dict[str, float] = {}
    for t in tasks:  # research_dag lists every task after its dependencies
        own = (
            float(t.payload["seconds"])
            if isinstance(t.payload, dict) and "seconds" in t.payload
            else 0.0
        )
        finish[t.id] = own + max((finish[d] for d in t.depends_on), default=0.0)
    return max(finish.values(), default=0.0)


def research_dag(reports: int, *, time_scale: float, seed: int) -> tuple[list[Task], float]:
    """Build the job; returns the tasks and their summed (serial) duration in seconds."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    serial = 0.0

    def tool(task_id: str, kind: str, deps: list[str], priority: int = 0) -> str:
        nonlocal serial
        median, sigma = LATENCY[kind]
        seconds = round(rng.lognormvariate(0, sigma) * median * time_scale, 4)
        serial += seconds
        tasks.append(
            Task(
                task_id,
                "sleep",
                {"seconds": seconds, "kind": kind},
                priority=priority,
                depends_on=deps,
                timeout_s=60,
            )
        )
        return task_id

    for r in range(reports):
        p = f"r{r}"
        coord = tool(f"{p}/coordinator", "llm", [], priority=2)
        background = tool(f"{p}/background-search", "search", [], priority=2)
        planner = tool(f"{p}/planner", "llm", [coord, background], priority=2)
        step_ends = []
        for s in range(3):
            prev = planner
            for turn in range(rng.randint(2, 3)):
                llm = tool(f"{p}/step{s}/turn{turn}/llm", "llm", [prev], priority=1)
                calls = [
                    tool(f"{p}/step{s}/turn{turn}/search{k}", "search", [llm])
                    for k in range(rng.choice((1, 2, 2, 3)))
                ]
                if rng.random() < 0.5:
                    calls.append(tool(f"{p}/step{s}/turn{turn}/crawl", "crawl", [llm]))
                prev = f"{p}/step{s}/turn{turn}/merge"
                tasks.append(Task(prev, "echo", {"turn": turn}, depends_on=calls))
            step_ends.append(prev)
        python = f"{p}/python"
        tasks.append(Task(python, "cpu", {"rounds": 20000}, depends_on=[step_ends[0]]))
        tool(f"{p}/reporter", "llm", [*step_ends, python], priority=3)
    return tasks, serial


async def run_demo(
    *, agents: int, slots: int, reports: int, time_scale: float, seed: int, console: Console
) -> DemoReport:
    console.print(
        f"[bold]deerflow-parallel demo[/]: embedded controller, {agents} local agents x {slots} "
        f"slots, {reports} research reports (no etcd: state in memory)"
    )
    tasks, serial = research_dag(reports, time_scale=time_scale, seed=seed)
    kinds = {t.id: _kind(t) for t in tasks}
    cluster = Cluster(agents, agent_args=["--slots", str(slots)])
    async with cluster, AsyncClient(cluster.address) as client:
        await client.agents(wait_for=agents, timeout_s=30)
        console.print(f"controller at {cluster.address}; {agents} agents connected")
        started = time.perf_counter()
        job = await client.submit(tasks, name="deerflow-demo")
        by_state: Counter[str] = Counter()
        done_kinds: Counter[str] = Counter()
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task("research DAG", total=len(tasks), running=0)
            running: set[str] = set()
            async for ev in job.events():
                if ev.state in ("RUNNING", "DISPATCHED"):
                    running.add(ev.task_id)
                if ev.terminal:
                    running.discard(ev.task_id)
                    by_state[ev.state] += 1
                    done_kinds[kinds[ev.task_id]] += 1
                    progress.advance(bar)
                progress.update(bar, running=len(running))
        wall = time.perf_counter() - started
        stats = await client.stats()
    return DemoReport(
        tasks=len(tasks),
        succeeded=by_state["SUCCEEDED"],
        failed=by_state["FAILED"] + by_state["TIMED_OUT"],
        cancelled=by_state["CANCELLED"],
        retries=stats.retries,
        wall_s=wall,
        serial_s=serial,
        critical_path_s=critical_path(tasks),
        by_kind=done_kinds,
    )


def _kind(task: Task) -> str:
    if task.handler == "sleep" and isinstance(task.payload, dict):
        return str(task.payload["kind"])
    return "python" if task.handler == "cpu" else "merge"


def summary_table(report: DemoReport) -> Table:
    table = Table(title="demo summary", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tasks", str(report.tasks))
    table.add_row("succeeded", str(report.succeeded))
    table.add_row("failures", str(report.failed))
    table.add_row("cancelled", str(report.cancelled))
    table.add_row("retries", str(report.retries))
    table.add_row("wall time", f"{report.wall_s:.2f} s")
    table.add_row("throughput", f"{report.throughput:.1f} tasks/s")
    table.add_row("serial time of the tool calls", f"{report.serial_s:.1f} s")
    table.add_row("speed-up over one-at-a-time", f"{report.serial_s / report.wall_s:.1f}x")
    table.add_row(
        "critical path (no schedule is faster)",
        f"{report.critical_path_s:.2f} s ({report.wall_s / report.critical_path_s:.2f}x)",
    )
    for kind, n in sorted(report.by_kind.items()):
        table.add_row(f"  {kind} tasks", str(n))
    return table
