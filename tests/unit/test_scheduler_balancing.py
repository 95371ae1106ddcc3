"""Scheduler + predictor + balancer: longest-first ordering, placement by predicted finish time
and learned agent speed, and moving unstarted attempts off a lagging agent. Fake clock."""

from __future__ import annotations

from dataclasses import replace

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import HandlerTraits, TaskSpec, TaskState
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

from .scheduling import JOB, assert_event_log_sound, events_of, key, make


def ids(sched: Scheduler) -> dict[str, list[str]]:
    return {a: [t.id for t in ts] for a, ts in sched.take().assignments.items()}


def test_a_burst_runs_longest_predicted_first() -> None:
    sched = make()
    specs = [TaskSpec(f"t{d}", "work", est_duration_s=float(d)) for d in (1, 5, 3, 4, 2)]
    sched.submit(JOB, "j", specs, 0.0)
    sched.agent_joined("a", ["work"], 5, 0.0)
    assert ids(sched) == {"a": ["t5", "t4", "t3", "t2", "t1"]}


def test_a_short_task_that_waited_long_enough_is_not_overtaken() -> None:
    sched = make(balancer=replace(SchedulerConfig().balancer, lpt_max_advance_s=10.0))
    sched.agent_joined("a", ["work"], 1, 0.0)
    sched.submit(JOB, "j", [TaskSpec("busy", "work", est_duration_s=100.0)], 0.0)
    sched.submit("j2", "j", [TaskSpec("short", "work", est_duration_s=1.0)], 1.0)
    sched.submit("j3", "j", [TaskSpec("long", "work", est_duration_s=500.0)], 30.0)
    sched.take()
    sched.finished("a", [AttemptResult(key("busy", 1), True, b"")], 50.0)
    # "short" waited 49 s; "long" is ahead by at most the 10 s cap: "short" goes first.
    assert ids(sched) == {"a": ["short"]}


def test_items_declared_by_the_handler_scale_the_prediction() -> None:
    sched = make()
    traits = {"work": HandlerTraits(items_field="items", default_duration_s=0.5)}
    sched.agent_joined("a", ["work"], 1, 0.0, traits=traits)
    job = sched.submit(
        JOB,
        "j",
        [
            TaskSpec("few", "work", payload=b'{"items": [1, 2]}'),
            TaskSpec("many", "work", payload=b'{"items": [1, 2, 3, 4, 5, 6, 7, 8]}'),
        ],
        0.0,
    )
    assert ids(sched) == {"a": ["many"]}
    assert job.tasks["many"].predicted_s > 3 * job.tasks["few"].predicted_s


def test_a_slower_agent_is_recognised_and_gets_fewer_long_tasks() -> None:
    sched = make()
    sched.agent_joined("fast", ["work"], 1, 0.0)
    sched.agent_joined("slow", ["work"], 1, 0.0)
    now = 0.0
    # Teach the predictor: the same task takes 1 s on "fast" and 2 s on "slow".
    for i in range(40):
        job = sched.submit(f"w{i}", "w", [TaskSpec("t", "work", est_duration_s=1.0)], now)
        ((agent, (task,)),) = sched.take().assignments.items()
        run_s = 1.0 if agent == "fast" else 2.0
        now += run_s
        sched.finished(agent, [AttemptResult(task.key, True, b"", run_s=run_s)], now)
        assert job.tasks["t"].state == TaskState.SUCCEEDED
    speed = sched.predictor.handler_speed("work", "slow") / sched.predictor.handler_speed(
        "work", "fast"
    )
    assert 0.4 < speed < 0.6
    # Both idle: whichever agent pulls the task, it goes to the faster one.
    for i in range(4):
        sched.submit(f"x{i}", "x", [TaskSpec("t", "work")], now)
        assigned = ids(sched)
        assert assigned == {"fast": ["t"]}, assigned
        (task,) = [t for t in sched.jobs[f"x{i}"].tasks.values()]
        sched.finished("fast", [AttemptResult(task.key, True, b"", run_s=1.0)], now + 1.0)
        now += 1.0


def test_an_idle_agent_takes_over_attempts_waiting_unstarted_on_a_busy_one() -> None:
    sched = make(prefetch=2)
    sched.agent_joined("a", ["work"], 1, 0.0)
    specs = [TaskSpec(f"t{i}", "work", est_duration_s=10.0) for i in range(3)]
    job = sched.submit(JOB, "j", specs, 0.0)
    assert ids(sched) == {"a": ["t0", "t1", "t2"]}
    sched.started("a", [key("t0", 1)], 0.1)
    sched.agent_joined("b", ["work"], 1, 1.0)
    out = sched.take()
    moved = {a: [t.id for t in ts] for a, ts in out.assignments.items()}
    assert list(moved) == ["b"] and len(moved["b"]) == 1
    (stolen,) = moved["b"]
    assert out.cancels == {"a": [key(stolen, 1)]}
    assert sched.counters.stolen == 1
    event = events_of(job, stolen)[-1]
    assert event.state == TaskState.DISPATCHED and event.agent_id == "b"
    assert event.detail.startswith("moved from a")
    assert job.tasks[stolen].failures == 0
    # The cancelled attempt's report is stale; nothing runs twice in the books.
    sched.finished("a", [AttemptResult(key(stolen, 1), False, cancelled=True)], 1.1)
    assert job.tasks[stolen].state == TaskState.DISPATCHED
    assert_event_log_sound(job)


def test_short_tasks_are_never_moved() -> None:
    sched = make(prefetch=2)
    sched.agent_joined("a", ["echo"], 1, 0.0)
    specs = [TaskSpec(f"t{i}", "echo", est_duration_s=0.001) for i in range(3)]
    sched.submit(JOB, "j", specs, 0.0)
    sched.take()
    sched.started("a", [key("t0", 1)], 0.0)
    sched.agent_joined("b", ["echo"], 1, 0.0)
    assert sched.take().cancels == {}
    assert sched.counters.stolen == 0
