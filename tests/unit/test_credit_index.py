"""Dispatch reads the core's credit index, not every agent (issue #19 item 4).

A result from one agent of a large, busy cluster refills that agent without looking at the
others, and placing a task compares a bounded number of agents. That the index always equals
its definition is checked after every step of the stateful model (``scheduling_invariants.
check_credit_index``); here, what it buys and what its placement window is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.credit_index import CreditIndex
from deerflow_controller.core.dispatch import PLACEMENT_CANDIDATES
from deerflow_controller.core.model import AgentView, HandlerTraits, Task, TaskSpec
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

TRAITS = {"llm": HandlerTraits(default_duration_s=1.0)}


def _core() -> Scheduler:
    return Scheduler(replace(SchedulerConfig(), agent_silence_s=1e9, prefetch=0), seed=1)


def _specs(n: int) -> list[TaskSpec]:
    return [TaskSpec(id=f"t{i}", handler="llm") for i in range(n)]


def test_a_result_refills_its_agent_without_reading_every_agents_credit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2,000 full agents, one reports: the refill reads a handful of credits (the old fill
    read all 2,000, so a round in which every agent reports cost agents^2)."""
    s = _core()
    s.submit("j", "j", _specs(3000), 0.0)
    for i in range(2000):
        s.agent_joined(f"a{i}", ["llm"], 1, 0.0, traits=TRAITS)
    out = s.take()
    assert sum(len(t) for t in out.assignments.values()) == 2000
    reads = 0
    credit = AgentView.credit

    def counting(agent: AgentView) -> int:
        nonlocal reads
        reads += 1
        return int(credit.__get__(agent))

    monkeypatch.setattr(AgentView, "credit", property(counting))
    (task,) = out.assignments["a7"]
    s.started("a7", [task.key], 1.0)
    s.finished("a7", [AttemptResult(task.key, ok=True, output=b"x", run_s=1.0)], 1.0)
    assert [t.id for t in s.take().assignments["a7"]] == ["t2000"]
    assert reads < 20, f"{reads} credit reads to refill one agent of 2,000"


def test_placement_compares_a_bounded_window_of_agents() -> None:
    """With more agents with credit than PLACEMENT_CANDIDATES, the balancer is offered the
    puller and the ones that joined after it, never every agent."""
    s = _core()
    for i in range(300):
        s.agent_joined(f"a{i}", ["llm"], 4, 0.0, traits=TRAITS)
    offered: list[int] = []
    place = s._place

    def counting(task: Task, agents: Sequence[AgentView], now: float) -> AgentView | None:
        offered.append(len(agents))
        return place(task, agents, now)

    s._place = counting
    s.submit("j", "j", _specs(200), 0.0)
    assert sum(len(t) for t in s.take().assignments.values()) == 200
    assert offered and max(offered) == PLACEMENT_CANDIDATES


def _agents(n: int) -> list[AgentView]:
    return [
        AgentView(id=f"a{i}", handlers=frozenset(), slots=1, prefetch=0, seq=i + 1)
        for i in range(n)
    ]


def test_the_window_is_everyone_in_join_order_up_to_its_size_then_the_followers() -> None:
    index = CreditIndex()
    agents = _agents(10)
    for a in reversed(agents):  # credit regained in any order: kept in join order
        index.update(a)
    assert index.order == agents and index.total == 10
    assert index.others(agents[3], 9) == agents[:3] + agents[4:]
    assert index.others(agents[3], 4) == agents[4:8]
    assert index.others(agents[8], 4) == [agents[9], *agents[:3]]
    agents[5].draining = True
    index.update(agents[5])
    assert agents[5] not in index.order and index.total == 9
    assert index.others(agents[5], 3) == agents[6:9]  # an agent without credit still pulls
    index.remove(agents[0])
    assert index.order[0] is agents[1] and index.total == 8
