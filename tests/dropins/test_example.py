"""The DeerFlow-shaped example end to end: ``deerflow sim``, a controller and an agent running
the ``subagent`` handler with the example's researcher and reporter, started and stopped by
``run_example`` itself, as ``deerflow demo --deerflow`` runs it."""

from __future__ import annotations

import json

from deerflow_bench._example import ExampleResult, parse_plan, render, run_example
from deerflow_bench.example_subagents import excerpt

STEPS = 3


async def test_the_report_step_receives_every_steps_findings() -> None:
    result: ExampleResult = await run_example(
        topic="EV battery supply chains", steps=STEPS, agents=1, time_scale=0
    )

    assert result.ok, result.states
    assert [s.id for s in result.plan] == ["step-1", "step-2", "step-3"]
    assert set(result.states) == {"step-1", "step-2", "step-3", "reporter"}
    # Each step ran its ReAct loop on the cluster: a tool-calling turn, then the findings.
    for step in result.plan:
        assert result.turns[step.id] == 2
        assert result.findings[step.id].strip()
    # The reporter read the steps' outputs through inputs="all": it cites each step by id with
    # the start of the findings that step's task returned, in depends_on order.
    cited = result.report.split("## Research steps cited\n", 1)[1].splitlines()
    assert cited == [f"- [{s.id}] {excerpt(result.findings[s.id])}" for s in result.plan]
    assert result.turns["reporter"] == 1
    # No provider answered 429: the cluster's limiter kept every call within the keys' budgets.
    assert result.provider_429s == 0
    # coordinator, background search, planner; per step 2 llm + search + crawl; the reporter
    assert result.provider_requests == 3 + 4 * STEPS + 1
    summary = result.summary()
    assert json.loads(json.dumps(summary))["findings"].keys() == {"step-1", "step-2", "step-3"}
    text = render(result)
    assert "Plan (3 steps" in text and "## Research steps cited" in text


def test_a_json_plan_is_taken_as_deerflows_and_prose_gives_its_first_sentences() -> None:
    doc = {"steps": [{"title": f"T{i}", "description": f"D{i}"} for i in range(4)]}

    plan, from_json = parse_plan(json.dumps(doc), 2)
    assert from_json and [(s.id, s.title, s.description) for s in plan] == [
        ("step-1", "T0", "D0"),
        ("step-2", "T1", "D1"),
    ]
    plan, from_json = parse_plan("Costs fell. Demand rose!", 3)
    assert not from_json
    assert [s.description for s in plan] == [
        "Costs fell.",
        "Demand rose!",
        "Aspect 3 of the topic.",
    ]
