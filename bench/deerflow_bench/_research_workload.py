"""The seeded research workload of ``deerflow bench research``: DeerFlow research jobs as
docs/WORKLOAD.md describes them, arriving as a Poisson stream of users, identical for every
system measured.

One job: coordinator (llm) -> planner (llm) -> research steps (2-5, mostly 3) run in parallel,
each a ReAct loop of 2-3 turns, a turn being one llm call fanning out to the searches and crawls
it asked for -> reporter (llm). The searches and crawls come from
:class:`~deerflow_bench._cache_workload.Workload` (30 % canned starters, Zipf(1.1) topics, plans
repeated or paraphrased across jobs, near-duplicates and templated siblings within a plan, 40 %
of crawled URLs repeating), so every cache meets the same repetition; each carries its intent
(what it asks, whatever the wording) for the oracle cache.

Everything here is data: the executors (``_baseline_fork``, ``_baseline_deerflow2`` and the
control plane) turn the same :class:`Job` list into the same HTTP requests.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ._cache_workload import Request, Workload

Kind = Literal["llm", "search", "crawl"]
MODEL = "sim-model"
LLM_MAX_TOKENS = 300
"""Completion cap of every llm call: the simulator's median completion, so calls stay ~0.7 s at
time scale 0.1."""


@dataclass(frozen=True, slots=True)
class Call:
    """One provider call: what the ``llm``, ``search`` or ``crawl`` handler is given."""

    kind: Kind
    payload: dict[str, Any]
    intent: str = ""
    """For search and crawl: what the call asks, whatever its wording (the oracle's key)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One ReAct turn: the llm call, then the tool calls it asked for, run together."""

    llm: Call
    tools: tuple[Call, ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class Job:
    """One user's research request, ``arrival_s`` after the run starts."""

    id: str
    arrival_s: float
    topic: str
    coordinator: Call
    planner: Call
    steps: tuple[Step, ...]
    reporter: Call

    def calls(self) -> list[Call]:
        out = [self.coordinator, self.planner]
        for step in self.steps:
            for turn in step.turns:
                out += [turn.llm, *turn.tools]
        return [*out, self.reporter]


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The knobs of one run; every system gets the jobs these produce."""

    seed: int = 7
    duration_s: float = 30.0
    """Users arrive during this long."""
    arrival_per_s: float = 0.7
    """Mean research jobs started per second (a Poisson stream)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def llm_call(prompt: str) -> Call:
    return Call(
        "llm",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": LLM_MAX_TOKENS,
        },
    )


def _tool_call(request: Request) -> Call:
    payload = json.loads(request.payload)
    return Call("search" if request.handler == "search" else "crawl", payload, repr(request.intent))


def build_jobs(spec: WorkloadSpec) -> list[Job]:
    """The jobs of a run, in arrival order; the same for the same ``spec``."""
    rng = random.Random(spec.seed)
    arrivals: list[float] = []
    t = rng.expovariate(spec.arrival_per_s)
    while t < spec.duration_s:
        arrivals.append(t)
        t += rng.expovariate(spec.arrival_per_s)
    stream = Workload(spec.seed).jobs(len(arrivals))
    by_job: dict[str, list[Request]] = defaultdict(list)
    for request in stream:
        by_job[request.job].append(request)
    jobs = []
    for j, at in enumerate(arrivals):
        requests = by_job.get(f"job-{j}", [])
        jobs.append(_job(f"job-{j}", at, requests, rng))
    return jobs


def _job(job_id: str, arrival_s: float, requests: list[Request], rng: random.Random) -> Job:
    topic = requests[0].text if requests else f"research question {job_id}"
    n_steps = rng.choice((2, 3, 3, 3, 3, 4, 5))
    turns_per_step = [rng.randint(2, 3) for _ in range(n_steps)]
    slots = [(s, t) for s in range(n_steps) for t in range(turns_per_step[s])]
    tools: dict[tuple[int, int], list[Call]] = defaultdict(list)
    # The searches and crawls of the job, dealt over its turns in order (a turn may ask none).
    for i, request in enumerate(requests):
        tools[slots[i % len(slots)]].append(_tool_call(request))
    steps = []
    for s in range(n_steps):
        turns = tuple(
            Turn(
                llm_call(f"Step {s} turn {t} of the research on: {topic}"),
                tuple(tools[(s, t)]),
            )
            for t in range(turns_per_step[s])
        )
        steps.append(Step(f"step {s}: {topic}", turns))
    return Job(
        job_id,
        arrival_s,
        topic,
        llm_call(f"Is this a research request? {topic}"),
        llm_call(f"Plan {n_steps} research steps on: {topic}"),
        tuple(steps),
        llm_call(f"Write the report on: {topic}"),
    )


@dataclass(slots=True)
class Oracle:
    """A perfect cache: it answers every search or crawl whose intent was asked before (the
    whole run lasts minutes, inside every freshness window)."""

    seen: set[str] = field(default_factory=set)
    cacheable: int = 0
    hits: int = 0

    @classmethod
    def of(cls, jobs: list[Job]) -> Oracle:
        oracle = cls()
        for job in jobs:
            for call in job.calls():
                if call.kind == "llm":
                    continue
                oracle.cacheable += 1
                if call.intent in oracle.seen:
                    oracle.hits += 1
                oracle.seen.add(call.intent)
        return oracle

    @property
    def hit_rate(self) -> float:
        return self.hits / self.cacheable if self.cacheable else 0.0


def jobs_to_json(jobs: list[Job]) -> list[dict[str, Any]]:
    return [asdict(job) for job in jobs]


def jobs_from_json(data: list[dict[str, Any]]) -> list[Job]:
    def call(d: dict[str, Any]) -> Call:
        return Call(d["kind"], d["payload"], d.get("intent", ""))

    return [
        Job(
            d["id"],
            float(d["arrival_s"]),
            d["topic"],
            call(d["coordinator"]),
            call(d["planner"]),
            tuple(
                Step(
                    s["title"],
                    tuple(
                        Turn(call(t["llm"]), tuple(call(c) for c in t["tools"])) for t in s["turns"]
                    ),
                )
                for s in d["steps"]
            ),
            call(d["reporter"]),
        )
        for d in data
    ]
