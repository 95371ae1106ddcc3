"""The DeerFlow-shaped example (``deerflow demo --deerflow``, ``make example``): DeerFlow 1.x's
research pipeline through the drop-ins, with no DeerFlow installed, against ``deerflow sim``.

What runs where:

- **This process plays DeerFlow**: the coordinator (``ClusterChatModel.bind_tools`` with
  DeerFlow's ``handoff_to_planner`` tool), the background search (``web_search``) and the
  planner (``ClusterChatModel``): each call is one task on the cluster.
- **The research steps and the reporter run on the agents**, submitted as one job: a
  ``subagent`` task per plan step running the ``researcher`` sub-agent (a ReAct loop whose every
  model, search and crawl call is again a cluster task), and a ``subagent`` task running the
  ``reporter``, which depends on every step with ``inputs="all"``: the controller hands it the
  steps' outputs (docs/INPUTS.md) and the handler passes them to the runnable. Only names and
  JSON payloads cross the wire; the sub-agents are installed on the agents by
  ``DEERFLOW_SUBAGENTS`` (see ``example_subagents``).

The simulated model writes prose, not DeerFlow's JSON plan: the planner's answer is parsed as a
plan when it is one, else its first sentences become the steps (said in the output).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool

from deerflow_controller.client import AsyncClient, Task
from deerflow_dropins._cluster import ClusterConnection, ClusterSettings
from deerflow_dropins.chat_model import ClusterChatModel
from deerflow_dropins.tools import get_web_search_tool

from ._launcher import Cluster, SimulatorProcess
from .example_subagents import DEFAULT_MODEL, excerpt

ACCOUNTS = {"llm": "example-llm", "search": "example-search", "crawl": "example-crawl"}
"""One provider account each; the simulator's keys and the rate keys' middle part."""
SUBAGENTS = (
    "researcher=deerflow_bench.example_subagents:researcher,"
    "reporter=deerflow_bench.example_subagents:reporter"
)
AGENT_HANDLER = "deerflow_dropins.subagent_handler:subagent"
AGENT_SLOTS = 16
SUBAGENT_SLOTS = 8
"""At most this many of an agent's slots run sub-agents: the rest stay free for the model and
tool calls the runs make (each a task of its own), so no run waits on a slot its siblings hold."""
LLM_RPM = 600
TOOL_RPM = 3000
STEP_TIMEOUT_S = 120.0


class ExampleError(Exception):
    """The example could not go on (one sentence)."""


@dataclass
class PlanStep:
    id: str
    title: str
    description: str


@dataclass
class ExampleResult:
    topic: str
    plan: list[PlanStep]
    plan_from_json: bool
    findings: dict[str, str]
    """Each step's findings (its sub-agent's result), by step id."""
    report: str
    states: dict[str, str]
    """Every task of the research job and its terminal state."""
    wall_s: float = 0.0
    """From the agents' being connected to the report."""
    planning_s: float = 0.0
    """Of which the coordinator, background search and planner (in this process)."""
    provider_requests: int = 0
    provider_429s: int = 0
    turns: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every task succeeded and every step, and the reporter, produced text (a sub-agent
        capped before its first answer succeeds with no result)."""
        done = bool(self.states) and all(s == "SUCCEEDED" for s in self.states.values())
        return done and bool(self.report.strip()) and all(t.strip() for t in self.findings.values())

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "topic": self.topic,
            "plan": [asdict(s) for s in self.plan],
            "plan_from_json": self.plan_from_json,
            "findings": {k: excerpt(v) for k, v in self.findings.items()},
            "turns": self.turns,
            "report": self.report,
            "states": self.states,
            "wall_s": round(self.wall_s, 3),
            "planning_s": round(self.planning_s, 3),
            "provider_requests": self.provider_requests,
            "provider_429s": self.provider_429s,
        }


@tool
def handoff_to_planner(research_topic: str, locale: str) -> str:
    """Hand the request off to the planner (DeerFlow's coordinator tool)."""
    return research_topic  # never run: the coordinator reads the call, as DeerFlow does


def parse_plan(text: str, steps: int) -> tuple[list[PlanStep], bool]:
    """The planner's answer as ``steps`` plan steps, and whether it was DeerFlow's JSON plan
    (``{"steps": [{"title", "description"}]}``); otherwise the answer's first sentences."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    raw = doc.get("steps") if isinstance(doc, dict) else None
    if isinstance(raw, list) and len(raw) >= steps and all(isinstance(s, dict) for s in raw):
        return [
            PlanStep(f"step-{i + 1}", str(s.get("title", "")), str(s.get("description", "")))
            for i, s in enumerate(raw[:steps])
        ], True
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    plan = []
    for i in range(steps):
        sentence = sentences[i] if i < len(sentences) else f"Aspect {i + 1} of the topic."
        plan.append(PlanStep(f"step-{i + 1}", excerpt(sentence, 60), sentence))
    return plan, False


def _subagent_task(task_id: str, name: str, prompt: str, **extra: Any) -> Task:
    """A ``subagent`` task; the payload is what ``SubagentExecutor.payload`` sends."""
    payload: dict[str, Any] = {
        "subagent": name,
        "task": prompt,
        "system_prompt": None,
        "tools": ["web_search", "crawl_tool"] if name == "researcher" else [],
        "model": DEFAULT_MODEL,
        "max_turns": 8,
        "token_budget": 200_000,
        "metadata": {},
    }
    return Task(
        task_id, "subagent", payload, timeout_s=STEP_TIMEOUT_S, max_retries=0, cache="off", **extra
    )


def research_job(topic: str, plan: list[PlanStep]) -> list[Task]:
    """The steps and the reporter: one job; the reporter reads every step's output."""
    tasks = [
        _subagent_task(s.id, "researcher", f"Research step {s.id} on {topic}: {s.description}")
        for s in plan
    ]
    steps = [s.id for s in plan]
    tasks.append(
        _subagent_task("reporter", "reporter", f"Report on {topic}", depends_on=steps, inputs="all")
    )
    return tasks


async def _deerflow_side(
    conn: ClusterConnection, topic: str, steps: int
) -> tuple[list[PlanStep], bool]:
    """Coordinator, background search and planner, in this process through the drop-ins."""
    model = ClusterChatModel(model=DEFAULT_MODEL, max_tokens=300, cluster=conn)
    coordinator = model.bind_tools([handoff_to_planner])
    answer = await coordinator.ainvoke(
        [SystemMessage(content="You are DeerFlow's coordinator."), HumanMessage(content=topic)]
    )
    if not any(c["name"] == "handoff_to_planner" for c in answer.tool_calls):
        raise ExampleError("the coordinator answered without handing off to the planner")
    search = get_web_search_tool(3, cluster=conn)
    background = await search.ainvoke({"query": topic})
    planned = await model.ainvoke(
        [
            SystemMessage(
                content=f"You are DeerFlow's planner. Plan {steps} research steps as JSON: "
                '{"steps": [{"title": ..., "description": ...}]}.'
            ),
            HumanMessage(content=f"{topic}\n\nBackground search results:\n{background}"),
        ]
    )
    return parse_plan(str(planned.content), steps)


async def _provider_counts(sim_url: str) -> tuple[int, int]:
    async with aiohttp.ClientSession() as session, session.get(f"{sim_url}/stats") as resp:
        keys = (await resp.json())["keys"]
    requests = throttled = 0
    for account in ACCOUNTS.values():
        stats = keys.get(account, {})
        requests += sum(int(stats.get(k, 0)) for k in ("served", "throttled", "failed", "invalid"))
        throttled += int(stats.get("throttled", 0))
    return requests, throttled


async def run_example(
    *, topic: str, steps: int, agents: int = 2, time_scale: float = 0.05, seed: int = 7
) -> ExampleResult:
    """Start the simulator, a controller and ``agents`` agents, run the pipeline, stop them."""
    sim = await SimulatorProcess.start(
        [
            *("--time-scale", str(time_scale), "--seed", str(seed), "--crawl-empty-rate", "0"),
            *("--key", f"{ACCOUNTS['llm']}=rpm:{LLM_RPM},tpm:10000000,concurrency:1000"),
            *("--key", f"{ACCOUNTS['search']}=rpm:{TOOL_RPM}"),
            *("--key", f"{ACCOUNTS['crawl']}=rpm:{TOOL_RPM}"),
        ]
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            limits = Path(tmp) / "limits.toml"
            limits.write_text(
                f'[[ratelimit.keys]]\npattern = "llm/{ACCOUNTS["llm"]}/*"\nrpm = {LLM_RPM}\n'
                f'[[ratelimit.keys]]\npattern = "*/example-*"\nrpm = {TOOL_RPM}\n'
            )
            cluster = Cluster(
                0,
                agent_args=[
                    *("--slots", str(AGENT_SLOTS), "--handler", AGENT_HANDLER),
                    *("--handler-slots", f"subagent={SUBAGENT_SLOTS}"),
                ],
                controller_args=["--limits", str(limits)],
            )
            async with cluster:
                result = await _on_cluster(cluster, sim.url, agents, topic, steps)
        result.provider_requests, result.provider_429s = await _provider_counts(sim.url)
        return result
    finally:
        await sim.stop()


async def _on_cluster(
    cluster: Cluster, sim_url: str, agents: int, topic: str, steps: int
) -> ExampleResult:
    # The agents' sub-agents reach the cluster as DeerFlow would: $DEERFLOW_CONTROLLER.
    env = {"DEERFLOW_CONTROLLER": cluster.address, "DEERFLOW_SUBAGENTS": SUBAGENTS}
    for kind, account in ACCOUNTS.items():
        env[f"DEERFLOW_{kind.upper()}_BASE_URL"] = sim_url
        env[f"DEERFLOW_{kind.upper()}_API_KEY"] = account
        env[f"DEERFLOW_{kind.upper()}_ACCOUNT"] = account
    for i in range(agents):
        await cluster.add_agent(f"agent-{i + 1}", env=env)
    settings = ClusterSettings(
        llm_account=ACCOUNTS["llm"],
        search_account=ACCOUNTS["search"],
        crawl_account=ACCOUNTS["crawl"],
    )
    conn = ClusterConnection(cluster.address, settings=settings)
    try:
        async with AsyncClient(cluster.address) as client:
            await client.agents(wait_for=agents, timeout_s=60)
            started = time.perf_counter()
            plan, from_json = await _deerflow_side(conn, topic, steps)
            planned = time.perf_counter()
            job = await client.submit(research_job(topic, plan), name="deerflow-example")
            results = await job.wait(timeout_s=STEP_TIMEOUT_S * 2)
    finally:
        conn.close()
    outputs = {
        task_id: r.json() if r.ok else {"result": f"{r.state} {r.error_kind}: {r.error}"}
        for task_id, r in results.items()
    }
    return ExampleResult(
        topic=topic,
        plan=plan,
        plan_from_json=from_json,
        findings={s.id: str(outputs[s.id].get("result") or "") for s in plan},
        report=str(outputs["reporter"].get("result") or ""),
        states={task_id: r.state for task_id, r in results.items()},
        wall_s=time.perf_counter() - started,
        planning_s=planned - started,
        turns={k: int(v.get("turns", 0)) for k, v in outputs.items()},
    )


def render(result: ExampleResult) -> str:
    """The plan, each step's findings summary and the report, as text."""
    how = "DeerFlow's JSON plan" if result.plan_from_json else "the planner's first sentences"
    lines = [f"Topic: {result.topic}", f"Plan ({len(result.plan)} steps, from {how}):"]
    lines += [f"  {s.id}: {s.title}" for s in result.plan]
    lines.append("Findings:")
    for s in result.plan:
        state = result.states.get(s.id, "?")
        lines.append(f"  {s.id} [{state}, {result.turns.get(s.id, 0)} turns]: ")
        lines[-1] += excerpt(result.findings[s.id], 100)
    lines += ["", result.report or f"(no report: {result.states.get('reporter', '?')})", ""]
    lines.append(
        f"{'ok' if result.ok else 'FAILED'} in {result.wall_s:.2f} s: "
        f"{result.provider_requests} provider requests, {result.provider_429s} 429s"
    )
    return "\n".join(lines)
