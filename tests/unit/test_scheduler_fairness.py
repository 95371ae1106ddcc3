"""The scheduler's ready queue over time: tenants share a handler fairly within a priority, and
a task that comes back to the queue (a retry, an attempt a lost or draining agent gives back)
keeps its place. Driven with a fake clock (``scheduling.run_timers``)."""

from __future__ import annotations

from deerflow_controller.core.model import TaskSpec, TaskState
from deerflow_controller.core.scheduler import Scheduler

from .scheduling import JOB, assert_event_log_sound, key, make, run_one_at_a_time, run_timers, trail


def tenant_specs(tenant: str, n: int, priority: int = 0) -> list[TaskSpec]:
    return [
        TaskSpec(id=f"{tenant}{i}", handler="echo", tenant=tenant, priority=priority)
        for i in range(n)
    ]


def first_assigned(s: Scheduler, agent: str) -> list[str]:
    return [t.id for t in s.take().assignments.get(agent, [])]


# ----------------------------------------------------------------- tenants


def test_a_tenant_with_16_tasks_does_not_run_all_of_them_before_another_tenants_4() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    a = s.submit("ja", "", tenant_specs("a", 16), 0.0)
    b = s.submit("jb", "", tenant_specs("b", 4), 0.1)

    order = first_assigned(s, "A") + run_one_at_a_time(s, "A", 0.1)

    assert order[:9] == ["a0", "a1", "b0", "a2", "b1", "a3", "b2", "a4", "b3"]
    assert order[9:] == [f"a{i}" for i in range(5, 16)]
    assert_event_log_sound(a)
    assert_event_log_sound(b)


def test_configured_tenant_weights_share_the_agents_in_proportion() -> None:
    s = make(tenant_weights={"big": 3.0})
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.submit("j1", "", tenant_specs("big", 30), 0.0)
    s.submit("j2", "", tenant_specs("small", 30), 0.0)

    order = first_assigned(s, "A") + run_one_at_a_time(s, "A", 0.0)

    # big0 left alone; from then on, while both wait, three of big's for one of small's.
    assert order[1:5] == ["big1", "big2", "big3", "small0"]
    tenants = [task_id.rstrip("0123456789") for task_id in order[1:33]]
    assert (tenants.count("big"), tenants.count("small")) == (24, 8)


def test_a_higher_priority_still_goes_before_a_tenants_turn() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.submit("j1", "", tenant_specs("a", 3), 0.0)
    s.submit("j2", "", tenant_specs("b", 3, priority=5), 0.0)

    order = first_assigned(s, "A") + run_one_at_a_time(s, "A", 0.0)

    assert order == ["a0", "b0", "b1", "b2", "a1", "a2"]


# ----------------------------------------------------------------- a task keeps its place


def busy_pair() -> tuple[Scheduler, str]:
    """Agents A and B of one slot each; x is on A, y0 on B, and y1..y4 queue behind them."""
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.agent_joined("B", ["echo"], 1, 0.0)
    s.submit(JOB, "", [TaskSpec(id=i, handler="echo") for i in ("x", "y0")], 0.0)
    s.submit("later", "", [TaskSpec(id=f"y{i}", handler="echo") for i in range(1, 5)], 1.0)
    out = s.take()
    holder = next(agent for agent, tasks in out.assignments.items() if tasks[0].id == "x")
    return s, holder


def test_a_task_retried_after_its_agent_died_keeps_its_place_in_the_ready_queue() -> None:
    s, holder = busy_pair()
    other = "B" if holder == "A" else "A"

    s.agent_left(holder, 2.0)
    run_timers(s, 3.0)  # the retry's backoff passes while the other agent is busy
    assert s.jobs[JOB].tasks["x"].state == TaskState.QUEUED

    order = run_one_at_a_time(s, other, 3.0)

    assert order == ["x", "y1", "y2", "y3", "y4"]
    assert_event_log_sound(s.jobs[JOB])


def test_a_task_a_draining_agent_gives_back_keeps_its_place_in_the_ready_queue() -> None:
    s, holder = busy_pair()
    other = "B" if holder == "A" else "A"

    s.agent_draining(holder, [key("x", 1)], 2.0)
    order = run_one_at_a_time(s, other, 2.0)

    assert order == ["x", "y1", "y2", "y3", "y4"]
    assert trail(s.jobs[JOB], "x")[-2:] == [TaskState.DISPATCHED, TaskState.SUCCEEDED]
    assert_event_log_sound(s.jobs[JOB])


def test_a_task_no_agent_can_take_yet_does_not_hold_up_the_tasks_behind_it() -> None:
    s = make()
    for agent in ("A", "B"):
        s.agent_joined(agent, ["work", "echo"], 4, 0.0)
    s.submit("busy", "", [TaskSpec(id=f"b{i}", handler="work") for i in range(2)], 0.0)
    s.take()
    for agent in ("A", "B"):
        s.heartbeat(agent, 1, 10.0, 95.0, 0.5)  # over the memory ceiling, and busy

    job = s.submit(
        JOB,
        "",
        [
            TaskSpec(id="big", handler="work", est_duration_s=10.0),
            *(TaskSpec(id=f"s{i}", handler="echo", est_duration_s=0.001) for i in range(3)),
        ],
        1.0,
    )

    sent = sorted(t.id for tasks in s.take().assignments.values() for t in tasks)
    assert sent == ["s0", "s1", "s2"]  # tiny tasks skip placement; big waits for room
    assert job.tasks["big"].state == TaskState.QUEUED
    assert s.queued() == 1
    assert_event_log_sound(job)
