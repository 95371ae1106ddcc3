"""Scheduler, driven with a fake clock: dispatch and credit, and dependencies."""

from __future__ import annotations

import pytest

from deerflow_controller.core.model import (
    ErrorKind,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

from .scheduling import (
    JOB,
    assert_event_log_sound,
    assigned,
    error_of,
    fail,
    key,
    last_event,
    make,
    ok,
    run_one,
    spec,
    trail,
)

# ----------------------------------------------------------------- dispatch and credit


def test_an_agent_is_never_sent_more_than_its_slots_plus_prefetch() -> None:
    s = make(prefetch=2)
    s.agent_joined("A", ["echo"], 2, 0.0)

    job = s.submit(JOB, "", [spec(f"t{i}") for i in range(10)], 0.0)

    assert assigned(s.take()) == {"A": [key(f"t{i}", 1) for i in range(4)]}
    assert s.agents["A"].credit == 0
    other = s.submit("j2", "", [spec("x")], 0.5)
    assert assigned(s.take()) == {}
    assert s.queued() == 7

    s.finished("A", [ok("t0", 1)], 1.0)

    assert assigned(s.take()) == {"A": [key("t4", 1)]}
    order = ["t0", "t1", "t2", "t3", "t4"]
    now = 1.0
    while s.agents["A"].in_flight:
        now += 1.0
        (oldest, *_) = s.agents["A"].in_flight
        s.finished("A", [AttemptResult(oldest, ok=True)], now)
        order.extend(t.id for t in s.take().assignments.get("A", []))
        assert len(s.agents["A"].in_flight) <= 4
    assert order == [f"t{i}" for i in range(10)] + ["x"]
    assert all(t.state == TaskState.SUCCEEDED for t in job.tasks.values())
    assert other.tasks["x"].state == TaskState.SUCCEEDED
    assert_event_log_sound(job)
    assert_event_log_sound(other)


def test_the_highest_priority_task_is_dispatched_first_when_slots_are_scarce() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(
        JOB,
        "",
        [
            spec("low", priority=1),
            spec("high", priority=5),
            spec("mid", priority=3),
            spec("mid2", priority=3),
        ],
        0.0,
    )

    order = []
    for step in range(4):
        order.append(run_one(s, "A"))
        s.finished("A", [ok(order[-1], 1)], step + 1.0)

    assert order == ["high", "mid", "mid2", "low"]
    assert_event_log_sound(job)


def _finish_all_in_flight(s: Scheduler, agent: str, now: float) -> int:
    """Report every unfinished attempt on ``agent`` as succeeded at ``now``; how many."""
    keys = list(s.agents[agent].in_flight)
    s.finished(agent, [AttemptResult(k, ok=True) for k in keys], now)
    s.take()
    return len(keys)


def test_a_fast_agents_prefetch_grows_to_cover_its_completion_rate() -> None:
    # Floor 2; cover 50 ms of completions, at most the slots.
    s = make(prefetch=2, prefetch_cover_s=0.05)
    s.agent_joined("A", ["echo"], 64, 0.0)
    s.submit(JOB, "", [spec(f"t{i}") for i in range(5000)], 0.0)
    s.take()
    assert s.agents["A"].prefetch == 2
    # 66 attempts finish every 50 ms: 1,320 a second, 66 in 50 ms, capped at the 64 slots.
    now = 0.0
    for _ in range(3):
        now += 0.05
        _finish_all_in_flight(s, "A", now)
    assert s.agents["A"].prefetch == 64
    assert len(s.agents["A"].in_flight) == 128  # slots + the grown prefetch, all sent


def test_a_slow_agents_prefetch_stays_at_the_floor_and_shrinks_back() -> None:
    s = make(prefetch=2, prefetch_cover_s=0.05)
    s.agent_joined("A", ["echo"], 8, 0.0)
    s.submit(JOB, "", [spec(f"t{i}") for i in range(1000)], 0.0)
    s.take()
    now = 0.0
    # 10 attempts a second: 0.5 in 50 ms, below the floor.
    for _ in range(5):
        now += 1.0
        (oldest, *_) = s.agents["A"].in_flight
        s.finished("A", [AttemptResult(oldest, ok=True)], now)
        s.take()
    assert s.agents["A"].prefetch == 2
    # A burst raises it at once (up to the 8 slots) ...
    now += 0.06
    _finish_all_in_flight(s, "A", now)
    assert s.agents["A"].prefetch == 8
    # ... and slow windows bring it down gradually, to the floor.
    rates = []
    for _ in range(20):
        now += 1.0
        (oldest, *_) = s.agents["A"].in_flight
        s.finished("A", [AttemptResult(oldest, ok=True)], now)
        s.take()
        rates.append(s.agents["A"].prefetch)
    assert rates == sorted(rates, reverse=True) and rates[0] > 2 and rates[-1] == 2
    assert len(s.agents["A"].in_flight) <= 8 + 2


def test_a_burst_is_spread_round_robin_across_two_agents() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 2, 0.0)
    s.agent_joined("B", ["echo"], 2, 0.0)

    job = s.submit(JOB, "", [spec(f"t{i}") for i in range(4)], 0.0)

    out = assigned(s.take())
    assert sorted(out) == ["A", "B"]
    assert sorted(out.values()) == [
        [key("t0", 1), key("t2", 1)],
        [key("t1", 1), key("t3", 1)],
    ]
    for agent, keys in out.items():
        assert all(job.tasks[k[1]].agent_id == agent for k in keys)
        assert all(last_event(job, k[1]).agent_id == agent for k in keys)
    assert_event_log_sound(job)


def test_single_tasks_submitted_one_after_another_alternate_between_idle_agents() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 4, 0.0)
    s.agent_joined("B", ["echo"], 4, 0.0)

    chosen = []
    for i in range(4):
        s.submit(f"j{i}", "", [spec("t")], float(i))
        (agent,) = s.take().assignments
        chosen.append(agent)

    assert sorted(chosen) == ["A", "A", "B", "B"]
    assert chosen[0] != chosen[1]
    assert chosen[2] != chosen[3]


def test_tasks_go_only_to_agents_that_offer_their_handler() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 4, 0.0)
    s.agent_joined("B", ["search"], 4, 0.0)

    job = s.submit(
        JOB,
        "",
        [spec("e1"), spec("s1", handler="search"), spec("e2"), spec("x", handler="llm")],
        0.0,
    )

    assert assigned(s.take()) == {"A": [key("e1", 1), key("e2", 1)], "B": [key("s1", 1)]}
    assert job.tasks["x"].state == TaskState.QUEUED
    assert_event_log_sound(job)


def test_tasks_submitted_before_any_agent_joins_wait_and_go_to_the_first_one() -> None:
    s = make()
    job = s.submit(JOB, "", [spec("a"), spec("b")], 0.0)

    out = s.take()
    assert out.assignments == {}
    assert out.touched_jobs == {JOB}
    assert s.queued() == 2
    s.tick(1_000.0)
    assert s.take().assignments == {}
    assert trail(job, "a") == [TaskState.QUEUED]

    s.agent_joined("A", ["echo"], 4, 1_001.0)

    assert assigned(s.take()) == {"A": [key("a", 1), key("b", 1)]}
    assert trail(job, "a") == [TaskState.QUEUED, TaskState.DISPATCHED]
    assert_event_log_sound(job)


def test_a_started_attempt_is_reported_running_on_its_agent() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.started("B", [key("t", 1)], 0.5)  # not the agent holding the attempt
    s.started("A", [key("t", 2)], 0.5)  # not the current attempt
    assert trail(job, "t") == [TaskState.QUEUED, TaskState.DISPATCHED]
    s.started("A", [key("t", 1)], 1.0)

    assert job.tasks["t"].state == TaskState.RUNNING
    running = last_event(job, "t")
    assert (running.state, running.attempt, running.agent_id, running.time) == (
        TaskState.RUNNING,
        1,
        "A",
        1.0,
    )
    assert_event_log_sound(job)


def test_an_agent_id_cannot_join_twice() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)

    with pytest.raises(ValueError, match="'A' is already connected"):
        s.agent_joined("A", ["echo"], 1, 1.0)


# ----------------------------------------------------------------- dependencies


def test_a_dependent_is_released_only_when_all_its_dependencies_succeed() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 4, 0.0)
    job = s.submit(JOB, "", [spec("c", "a", "b"), spec("a"), spec("b")], 0.0)
    assert assigned(s.take()) == {"A": [key("a", 1), key("b", 1)]}
    assert trail(job, "c") == [TaskState.PENDING]

    s.finished("A", [ok("a", 1)], 1.0)

    assert assigned(s.take()) == {}
    assert job.tasks["c"].state == TaskState.PENDING

    s.finished("A", [ok("b", 1)], 2.0)

    assert assigned(s.take()) == {"A": [key("c", 1)]}
    assert trail(job, "c") == [TaskState.PENDING, TaskState.QUEUED, TaskState.DISPATCHED]
    assert_event_log_sound(job)


def test_dependents_are_released_in_submission_order() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "a")], 0.0)
    assert run_one(s, "A") == "a"

    order = []
    for step, done in enumerate(["a", "b", "c"]):
        s.finished("A", [ok(done, 1)], step + 1.0)
        order.append(run_one(s, "A"))

    assert order == ["b", "c", "d"]
    queued = [e.task_id for e in job.events if e.state == TaskState.QUEUED and e.task_id != "a"]
    assert queued == ["b", "c", "d"]
    assert_event_log_sound(job)


def test_a_failed_dependency_fails_its_dependents_at_once_with_a_reason() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 2, 0.0)
    job = s.submit(
        JOB,
        "",
        [spec("a"), spec("b", "a"), spec("c", "b"), spec("d", "a", "e"), spec("e")],
        0.0,
    )
    assert assigned(s.take()) == {"A": [key("a", 1), key("e", 1)]}

    s.finished("A", [fail("a", 1, "bad input", retryable=False)], 1.0)

    out = s.take()
    assert out.assignments == {}
    assert out.cancels == {}
    for task_id in ("b", "c", "d"):
        assert job.tasks[task_id].state == TaskState.FAILED
        assert error_of(job, task_id).kind == ErrorKind.DEPENDENCY_FAILED
        assert trail(job, task_id) == [TaskState.PENDING, TaskState.FAILED]
        assert last_event(job, task_id).time == 1.0
    assert error_of(job, "b").message == "dependency 'a' ended FAILED: bad input"
    assert error_of(job, "d").message == "dependency 'a' ended FAILED: bad input"
    assert error_of(job, "c").message.startswith("dependency 'b' ended FAILED")
    assert job.tasks["e"].state == TaskState.DISPATCHED
    assert job.remaining == 1
    assert s.counters.failed == 4
    assert_event_log_sound(job)


def test_a_deep_chain_failure_fails_every_dependent_without_recursion() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    n = 3_000
    specs = [spec("t0")] + [spec(f"t{i}", f"t{i - 1}") for i in range(1, n)]
    job = s.submit(JOB, "", specs, 0.0)
    assert run_one(s, "A") == "t0"

    s.finished("A", [fail("t0", 1, retryable=False)], 1.0)

    for i in range(1, n):
        task = job.tasks[f"t{i}"]
        assert task.state == TaskState.FAILED
        assert error_of(job, f"t{i}").kind == ErrorKind.DEPENDENCY_FAILED
        assert error_of(job, f"t{i}").message.startswith(f"dependency 't{i - 1}' ended FAILED")
    assert job.done
    assert_event_log_sound(job)


def test_a_deep_chain_failure_keeps_each_dependents_message_short() -> None:
    # Each dependent's message embeds its dependency's whole message, so along a chain the
    # messages grow linearly and their total quadratically (about 150 MB for 3,000 tasks).
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    n = 3_000
    specs = [spec("t0")] + [spec(f"t{i}", f"t{i - 1}") for i in range(1, n)]
    job = s.submit(JOB, "", specs, 0.0)
    s.take()

    s.finished("A", [fail("t0", 1, retryable=False)], 1.0)

    longest = max(len(error_of(job, f"t{i}").message) for i in range(1, n))
    assert longest <= 1_000
    assert error_of(job, f"t{n - 1}").message.startswith(f"dependency 't{n - 2}' ended FAILED")
