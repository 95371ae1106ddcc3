"""The embedded demo: a DeerFlow-shaped research DAG on a local cluster against the provider
simulator, with live progress.

Each report follows DeerFlow's pipeline (docs/WORKLOAD.md): coordinator (llm) and background
search, planner (llm), then research steps that each loop through LLM turns fanning out to
searches and crawls and end in an LLM call that reads those results (its findings), a Python
step, and a reporter (llm) that writes from every step's findings, which reach it as task
inputs. Unlike DeerFlow, the steps of a plan and the reports run in parallel. Tool calls are the
real ``llm``, ``search`` and ``crawl`` handlers calling ``deerflow sim`` over HTTP; the simulated
LLM key allows only ``--llm-rpm`` requests per minute, so the cluster-wide limiter holds LLM
calls THROTTLED rather than letting the provider answer 429.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deerflow_controller.client import INPUTS_ALL, AsyncClient, Task

from ._launcher import Cluster, SimulatorProcess

MODEL = "sim-model"
API_KEYS = {"LLM": "demo-llm", "SEARCH": "demo-search", "CRAWL": "demo-crawl"}
"""One account per provider, as in a real deployment."""
LLM_KEY = f"llm/demo-llm/{MODEL}"
SEARCH_KEY = "search/demo-search"
CRAWL_KEY = "crawl/demo-crawl"
TOOL_RPM = 3000
"""The search and reader accounts' limit (Tavily and Jina production keys are 1,000+)."""


@dataclass
class DemoReport:
    tasks: int
    succeeded: int
    failed: int
    cancelled: int
    retries: int
    wall_s: float
    busy_s: float
    """Summed time from dispatch to result of every task: what one-at-a-time would take."""
    provider_requests: int
    provider_429s: int
    throttled_tasks: int
    by_kind: Counter[str] = field(default_factory=Counter)
    from_cache: int = 0
    """Tasks answered by the result cache or by an identical task in flight."""
    reports: int = 0
    reports_from_findings: int = 0
    """Reporters whose answer was written from every one of their steps' findings."""

    @property
    def throughput(self) -> float:
        return self.tasks / self.wall_s if self.wall_s else 0.0


def research_dag(reports: int, *, seed: int) -> list[Task]:
    """The job: ``reports`` research reports, each a DAG of LLM turns and tool calls."""
    rng = random.Random(seed)
    tasks: list[Task] = []

    def llm(
        task_id: str,
        prompt: str,
        deps: list[str],
        priority: int = 1,
        inputs: Sequence[str] | str = (),
    ) -> str:
        """An LLM call; with ``inputs``, its dependencies' outputs are its context."""
        tasks.append(
            Task(
                task_id,
                "llm",
                {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 200,
                },
                priority=priority,
                depends_on=deps,
                inputs=inputs,
                rate_keys=(LLM_KEY,),
                est_tokens=len(prompt) / 4 + 200,
                timeout_s=120,
            )
        )
        return task_id

    def tool(task_id: str, handler: str, payload: dict[str, Any], deps: list[str]) -> str:
        """A search or crawl call, on its provider's key."""
        key = SEARCH_KEY if handler == "search" else CRAWL_KEY
        tasks.append(
            Task(task_id, handler, payload, depends_on=deps, rate_keys=(key,), timeout_s=60)
        )
        return task_id

    def search(task_id: str, query: str, deps: list[str]) -> str:
        return tool(task_id, "search", {"query": query, "max_results": 5}, deps)

    def crawl(task_id: str, url: str, deps: list[str]) -> str:
        return tool(task_id, "crawl", {"url": url}, deps)

    topics = ["EV battery supply chains", "delivery market share", "LLM inference costs"]
    for r in range(reports):
        topic = f"{topics[r % len(topics)]} #{r}"
        p = f"r{r}"
        coord = llm(f"{p}/coordinator", f"Is this a research request? {topic}", [], 3)
        background = search(f"{p}/background-search", topic, [])
        planner = llm(f"{p}/planner", f"Plan 3 research steps on {topic}", [coord, background], 3)
        step_ends = []
        for s in range(3):
            prev = planner
            turns = rng.randint(2, 3)
            for turn in range(turns):
                think = llm(
                    f"{p}/step{s}/turn{turn}/llm", f"Step {s} turn {turn} on {topic}", [prev]
                )
                calls = [
                    search(f"{p}/step{s}/turn{turn}/search{k}", f"{topic} aspect {s}.{k}", [think])
                    for k in range(rng.choice((1, 2, 2, 3)))
                ]
                if rng.random() < 0.5:
                    url = f"https://example.org/{r}/{s}/{turn}"
                    calls.append(crawl(f"{p}/step{s}/turn{turn}/crawl", url, [think]))
                if turn == turns - 1:
                    # The step's findings: an LLM call that reads its last tool calls' results.
                    prev = llm(
                        f"{p}/step{s}/findings",
                        f"Summarise step {s} on {topic}",
                        calls,
                        inputs=INPUTS_ALL,
                    )
                else:
                    prev = f"{p}/step{s}/turn{turn}/merge"
                    tasks.append(Task(prev, "echo", {"turn": turn}, depends_on=calls))
            step_ends.append(prev)
        python = f"{p}/python"
        tasks.append(Task(python, "cpu", {"rounds": 20000}, depends_on=[step_ends[0]]))
        # The reporter writes from every step's findings (they reach it as inputs, issue #15).
        llm(
            f"{p}/reporter",
            f"Write the report on {topic}",
            [*step_ends, python],
            4,
            inputs=step_ends,
        )
    return tasks


def _kind(task: Task) -> str:
    return {"cpu": "python", "echo": "merge"}.get(task.handler, task.handler)


async def run_demo(
    *,
    agents: int,
    slots: int,
    reports: int,
    time_scale: float,
    llm_rpm: float,
    seed: int,
    console: Console,
) -> DemoReport:
    console.print(
        f"[bold]deerflow-parallel demo[/]: embedded controller (no etcd: state in memory), "
        f"{agents} local agents x {slots} slots, provider simulator with an LLM key limited to "
        f"{llm_rpm:g} requests/min, {reports} research reports"
    )
    tasks = research_dag(reports, seed=seed)
    kinds = {t.id: _kind(t) for t in tasks}
    sim = await SimulatorProcess.start(
        [
            "--time-scale",
            str(time_scale),
            "--seed",
            str(seed),
            "--key",
            f"demo-llm=rpm:{llm_rpm:g},tpm:10000000,concurrency:1000",
            "--key",
            f"demo-search=rpm:{TOOL_RPM}",
            "--key",
            f"demo-crawl=rpm:{TOOL_RPM}",
        ]
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            limits = Path(tmp) / "limits.toml"
            limits.write_text(
                f'[[ratelimit.keys]]\npattern = "llm/demo-llm/*"\nrpm = {llm_rpm}\n'
                f'[[ratelimit.keys]]\npattern = "*/demo-*"\nrpm = {TOOL_RPM}\n'
            )
            env = {}
            for provider, key in API_KEYS.items():
                env[f"DEERFLOW_{provider}_BASE_URL"] = sim.url
                env[f"DEERFLOW_{provider}_API_KEY"] = key
            cluster = Cluster(
                agents,
                agent_args=["--slots", str(slots)],
                controller_args=["--limits", str(limits)],
                agent_env=env,
            )
            async with cluster, AsyncClient(cluster.address) as client:
                await client.agents(wait_for=agents, timeout_s=30)
                console.print(
                    f"controller at {cluster.address}, simulator at {sim.url}; "
                    f"{agents} agents connected"
                )
                report = await _run(client, tasks, kinds, console)
        async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/stats") as resp:
            keys = (await resp.json())["keys"]
        for key in API_KEYS.values():
            stats = keys.get(key, {})
            report.provider_requests += sum(
                int(stats.get(k, 0)) for k in ("served", "throttled", "failed", "invalid")
            )
            report.provider_429s += int(stats.get("throttled", 0))
        return report
    finally:
        await sim.stop()


async def _run(
    client: AsyncClient, tasks: list[Task], kinds: dict[str, str], console: Console
) -> DemoReport:
    started = time.perf_counter()
    job = await client.submit(tasks, name="deerflow-demo")
    by_state: Counter[str] = Counter()
    done_kinds: Counter[str] = Counter()
    dispatched_at: dict[str, float] = {}
    throttled: set[str] = set()
    failures: list[str] = []
    busy = 0.0
    reporters = {t.id: list(t.inputs) for t in tasks if t.id.endswith("/reporter")}
    from_findings = 0
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("running {task.fields[running]}  throttled {task.fields[throttled]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("research DAG", total=len(tasks), running=0, throttled=0)
        waiting: set[str] = set()
        async for ev in job.events():
            if ev.state == "THROTTLED":
                throttled.add(ev.task_id)
                waiting.add(ev.task_id)
            elif ev.state == "DISPATCHED":
                waiting.discard(ev.task_id)
                dispatched_at[ev.task_id] = ev.time
            elif ev.terminal:
                if ev.state != "SUCCEEDED" and len(failures) < 5:
                    failures.append(f"{ev.task_id}: {ev.state} {ev.error_kind}: {ev.error}")
                busy += ev.time - dispatched_at.pop(ev.task_id, ev.time)
                if ev.state == "SUCCEEDED" and ev.task_id in reporters:
                    read = json.loads(ev.output).get("context_from")
                    from_findings += read == reporters[ev.task_id]
                by_state[ev.state] += 1
                done_kinds[kinds[ev.task_id]] += 1
                progress.advance(bar)
            progress.update(bar, running=len(dispatched_at), throttled=len(waiting))
    wall = time.perf_counter() - started
    for line in failures:
        console.print(f"[red]failed[/red] {line}")
    stats = await client.stats()
    return DemoReport(
        tasks=len(tasks),
        succeeded=by_state["SUCCEEDED"],
        failed=by_state["FAILED"] + by_state["TIMED_OUT"],
        cancelled=by_state["CANCELLED"],
        retries=stats.retries,
        wall_s=wall,
        busy_s=busy,
        provider_requests=0,
        provider_429s=0,
        throttled_tasks=len(throttled),
        from_cache=sum(stats.cache.hits.values()),
        by_kind=done_kinds,
        reports=len(reporters),
        reports_from_findings=from_findings,
    )


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
    table.add_row("time one at a time would take", f"{report.busy_s:.1f} s")
    table.add_row("speed-up", f"{report.busy_s / report.wall_s:.1f}x" if report.wall_s else "-")
    table.add_row("provider requests", str(report.provider_requests))
    table.add_row("provider 429s", str(report.provider_429s))
    table.add_row("tasks held THROTTLED by the limiter", str(report.throttled_tasks))
    table.add_row("answered from the result cache", str(report.from_cache))
    table.add_row(
        "reports written from all their steps' findings",
        f"{report.reports_from_findings}/{report.reports}",
    )
    for kind, n in sorted(report.by_kind.items()):
        table.add_row(f"  {kind} tasks", str(n))
    return table
