"""Scheduler: the pure core, driven with a fake clock (a float passed as ``now``).

Every test reads the decisions from ``Scheduler.take()`` and the task events from ``job.events``,
and ends by checking the event log: seq numbers without gaps and exactly one terminal event per
finished task, after which that task has no further event.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.model import (
    AttemptKey,
    ErrorClass,
    ErrorKind,
    Job,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.recovery import RecoveryConfig, RetryConfig
from deerflow_controller.scheduler import AttemptResult, Outbox, Scheduler

from .scheduling import JOB, assert_event_log_sound, error_of, events_of, key, last_event, trail

# ----------------------------------------------------------------- helpers


def retries(**kw: Any) -> RecoveryConfig:
    """A recovery config whose retry policy has ``kw`` (see recovery.RetryConfig)."""
    return RecoveryConfig(retry=RetryConfig(**kw))


def make(**overrides: Any) -> Scheduler:
    """A seeded scheduler; prefetch 0 unless asked (no floor, no rate-sized part), so an agent's
    credit equals its slots.
    Silent agents are only declared dead in the tests that ask for it (agent_silence_s)."""
    base = SchedulerConfig(
        prefetch=0, prefetch_fraction=0.0, prefetch_cover_s=0.0, agent_silence_s=1e9
    )
    return Scheduler(replace(base, **overrides), seed=7)


def spec(
    task_id: str,
    *depends_on: str,
    handler: str = "echo",
    priority: int = 0,
    timeout_s: float = 0.0,
    max_retries: int = -1,
) -> TaskSpec:
    return TaskSpec(
        id=task_id,
        handler=handler,
        priority=priority,
        depends_on=depends_on,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )


def ok(task_id: str, attempt: int, output: bytes = b"done", job_id: str = JOB) -> AttemptResult:
    return AttemptResult(key(task_id, attempt, job_id), ok=True, output=output)


def fail(
    task_id: str,
    attempt: int,
    message: str = "boom",
    *,
    retryable: bool = True,
    retry_after_s: float = 0.0,
) -> AttemptResult:
    error = TaskError(ErrorKind.HANDLER_ERROR, message, retryable, retry_after_s)
    return AttemptResult(key(task_id, attempt), ok=False, error=error)


def assigned(out: Outbox) -> dict[str, list[AttemptKey]]:
    """The outbox's assignments as attempt keys, read at once (a task's key follows its attempt)."""
    return {agent: [t.key for t in tasks] for agent, tasks in out.assignments.items()}


def run_one(sched: Scheduler, agent: str) -> str:
    """The single task just assigned to ``agent``: its id."""
    out = sched.take()
    assert list(out.assignments) == [agent]
    (task,) = out.assignments[agent]
    return task.id


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


# ----------------------------------------------------------------- retries


def test_a_failed_attempt_is_retried_after_a_jittered_backoff_and_not_before() -> None:
    s = make(recovery=retries(transient_base_s=0.2))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=3)], 0.0)
    s.take()

    s.finished("A", [fail("t", 1)], 1.0)

    out = s.take()
    assert out.assignments == {}
    assert out.touched_jobs == {JOB}
    retrying = last_event(job, "t")
    assert (retrying.state, retrying.attempt, retrying.agent_id) == (TaskState.RETRYING, 1, "A")
    assert retrying.error == TaskError(
        ErrorKind.HANDLER_ERROR, "boom", True, 0.0, ErrorClass.TRANSIENT
    )
    # Decorrelated jitter: the first delay is uniform between the base and three times it.
    not_before = retrying.not_before
    assert 1.2 <= not_before <= 1.6
    assert retrying.detail.startswith("transient HANDLER_ERROR; retry 1 of 3 in ")
    assert retrying.detail.endswith("s (decorrelated jitter)")
    assert job.tasks["t"].state == TaskState.QUEUED
    assert s.queued() == 0
    assert s.next_timer() == not_before

    s.tick(not_before - 0.001)
    assert s.take().assignments == {}

    s.tick(not_before)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    assert trail(job, "t") == [
        TaskState.QUEUED,
        TaskState.DISPATCHED,
        TaskState.RETRYING,
        TaskState.QUEUED,
        TaskState.DISPATCHED,
    ]
    assert job.tasks["t"].failures == 1
    assert s.counters.retries == 1
    assert_event_log_sound(job)


def test_each_retry_delay_is_at_most_three_times_the_last_and_under_the_cap() -> None:
    s = make(recovery=retries(transient_base_s=1.0, transient_cap_s=3.0))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=5)], 0.0)
    s.take()

    now, last = 0.0, 1.0
    for attempt in (1, 2, 3, 4):
        now += 10.0
        s.finished("A", [fail("t", attempt)], now)
        delay = last_event(job, "t").not_before - now
        assert 1.0 - 1e-9 <= delay <= min(3.0, 3 * last) + 1e-9, (attempt, delay)
        now, last = now + delay, delay
        s.tick(now)
        assert assigned(s.take()) == {"A": [key("t", attempt + 1)]}
    assert_event_log_sound(job)


def test_the_same_seed_gives_the_same_retry_times() -> None:
    def retry_time(seed: int) -> float:
        s = Scheduler(SchedulerConfig(), seed=seed)
        s.agent_joined("A", ["echo"], 1, 0.0)
        job = s.submit(JOB, "", [spec("t")], 0.0)
        s.finished("A", [fail("t", 1)], 1.0)
        return last_event(job, "t").not_before

    assert retry_time(42) == retry_time(42)
    assert retry_time(42) != retry_time(43)


def test_a_retry_after_longer_than_the_backoff_is_used_as_a_floor() -> None:
    s = make(recovery=retries(transient_base_s=0.2))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [fail("t", 1, "429 slow down", retry_after_s=5.0)], 1.0)

    assert last_event(job, "t").not_before == 6.0
    s.tick(5.999)
    assert s.take().assignments == {}
    s.tick(6.0)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    assert_event_log_sound(job)


def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    s = make(recovery=retries(transient_base_s=1.0))
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [fail("t", 1, retry_after_s=0.01)], 1.0)

    assert 2.0 <= last_event(job, "t").not_before <= 4.0


def test_a_non_retryable_error_fails_the_task_at_once() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=5)], 0.0)
    s.take()

    s.finished("A", [fail("t", 1, "payload is not JSON", retryable=False)], 1.0)

    assert trail(job, "t") == [TaskState.QUEUED, TaskState.DISPATCHED, TaskState.FAILED]
    failed = last_event(job, "t")
    assert (failed.attempt, failed.agent_id) == (1, "A")
    assert failed.error == TaskError(
        ErrorKind.HANDLER_ERROR, "payload is not JSON", False, 0.0, ErrorClass.FATAL
    )
    s.tick(1_000.0)
    assert s.take().assignments == {}
    assert s.counters.retries == 0
    assert_event_log_sound(job)


def test_a_task_that_exhausts_its_retries_fails_with_a_message_counting_the_attempts() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=2)], 0.0)
    s.take()

    now = 0.0
    for attempt in (1, 2):
        now += 1.0
        s.finished("A", [fail("t", attempt)], now)
        now = last_event(job, "t").not_before
        s.tick(now)
        assert assigned(s.take()) == {"A": [key("t", attempt + 1)]}
    s.finished("A", [fail("t", 3)], now + 1.0)

    assert job.tasks["t"].state == TaskState.FAILED
    failed = last_event(job, "t")
    assert (failed.state, failed.attempt, failed.agent_id) == (TaskState.FAILED, 3, "A")
    assert failed.error is not None
    assert failed.error.kind == ErrorKind.HANDLER_ERROR
    assert failed.error.message == (
        "boom; gave up after 3 attempts: transient HANDLER_ERROR; gave up: retry budget of 2 used"
    )
    assert trail(job, "t").count(TaskState.RETRYING) == 2
    s.tick(now + 1_000.0)
    assert s.take().assignments == {}
    assert_event_log_sound(job)


def test_a_task_asking_for_the_default_retries_gets_the_configured_number() -> None:
    s = make(default_max_retries=1)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=-1)], 0.0)
    s.take()

    s.finished("A", [fail("t", 1)], 1.0)
    s.tick(last_event(job, "t").not_before)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    s.finished("A", [fail("t", 2)], 10.0)

    assert error_of(job, "t").message == (
        "boom; gave up after 2 attempts: transient HANDLER_ERROR; gave up: retry budget of 1 used"
    )
    assert_event_log_sound(job)


# ----------------------------------------------------------------- timeouts


def test_an_attempt_past_its_timeout_plus_grace_is_cancelled_on_its_agent_and_retried() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0, max_retries=1)], 0.0)
    s.take()
    s.started("A", [key("t", 1)], 0.0)
    s.take()

    s.tick(14.999)
    assert not s.take()

    s.tick(15.0)

    out = s.take()
    assert out.cancels == {"A": [key("t", 1)]}
    retrying = last_event(job, "t")
    assert (retrying.state, retrying.attempt, retrying.agent_id) == (TaskState.RETRYING, 1, "A")
    assert retrying.error == TaskError(
        ErrorKind.TIMEOUT,
        "attempt 1 on agent 'A' did not finish within 10 s (start-to-close)",
        True,
        0.0,
        ErrorClass.TIMEOUT,
    )
    assert retrying.not_before > 15.0
    s.finished("A", [AttemptResult(key("t", 1), ok=False, cancelled=True)], 15.01)
    s.tick(retrying.not_before)
    assert assigned(s.take()) == {"A": [key("t", 2)]}
    assert job.tasks["t"].failures == 1
    assert_event_log_sound(job)


def test_an_attempt_that_times_out_without_retries_left_ends_timed_out() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0, max_retries=0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()

    s.tick(15.0)

    assert s.take().cancels == {"A": [key("t", 1)]}
    assert trail(job, "t") == [
        TaskState.QUEUED,
        TaskState.DISPATCHED,
        TaskState.RUNNING,
        TaskState.TIMED_OUT,
    ]
    assert last_event(job, "t").error == TaskError(
        ErrorKind.TIMEOUT,
        "attempt 1 on agent 'A' did not finish within 10 s (start-to-close); "
        "gave up after 1 attempts: timeout TIMEOUT; gave up: retry budget of 0 used",
        False,
        0.0,
        ErrorClass.TIMEOUT,
    )
    assert s.counters.timed_out == 1
    assert_event_log_sound(job)


def test_a_task_without_a_timeout_gets_the_configured_default() -> None:
    s = make(default_timeout_s=60.0, timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()

    s.tick(64.999)
    assert s.take().cancels == {}
    s.tick(65.0)

    assert s.take().cancels == {"A": [key("t", 1)]}
    assert job.tasks["t"].state == TaskState.TIMED_OUT


def test_an_attempt_that_finished_in_time_is_never_timed_out() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0)], 0.0)
    s.take()
    s.finished("A", [ok("t", 1)], 5.0)
    events = len(job.events)

    s.tick(1_000.0)

    assert s.take().cancels == {}
    assert len(job.events) == events
    assert job.tasks["t"].state == TaskState.SUCCEEDED


def test_a_prefetched_attempt_is_timed_from_its_start_not_from_its_dispatch() -> None:
    # t2 waits in the agent's prefetch buffer for 9 s, then runs; start-to-close counts from
    # its start, so at dispatch + timeout + grace (15) it has run 6 s of its 10 s.
    s = make(prefetch=1, timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t1", timeout_s=10.0), spec("t2", timeout_s=10.0)], 0.0)
    assert assigned(s.take()) == {"A": [key("t1", 1), key("t2", 1)]}
    s.started("A", [key("t1", 1)], 0.0)
    s.finished("A", [ok("t1", 1)], 9.0)
    s.started("A", [key("t2", 1)], 9.0)

    s.tick(15.0)

    assert s.take().cancels == {}
    assert job.tasks["t2"].state == TaskState.RUNNING
    s.tick(24.0)
    assert s.take().cancels == {"A": [key("t2", 1)]}
    assert_event_log_sound(job)


def test_a_late_success_after_a_timeout_is_accepted_while_the_retry_waits() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()
    s.tick(15.0)
    not_before = last_event(job, "t").not_before
    s.take()

    s.finished("A", [ok("t", 1, b"just in time")], 15.01)

    done = last_event(job, "t")
    assert (done.state, done.attempt, done.agent_id, done.output) == (
        TaskState.SUCCEEDED,
        1,
        "A",
        b"just in time",
    )
    s.tick(not_before)
    assert s.take().assignments == {}
    assert_event_log_sound(job)


def test_a_result_after_the_final_timeout_is_ignored() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0, max_retries=0)], 0.0)
    s.started("A", [key("t", 1)], 0.0)
    s.take()
    s.tick(15.0)

    s.finished("A", [ok("t", 1)], 16.0)

    assert job.tasks["t"].state == TaskState.TIMED_OUT
    assert job.tasks["t"].output == b""
    assert s.counters.stale_results == 1
    assert_event_log_sound(job)


# ----------------------------------------------------------------- lost agents and stale results


def _task_lost_with_agent_a(max_retries: int = 3) -> tuple[Scheduler, Job]:
    """t ran on A (attempt 1); B joined idle; then A's stream ended at 3.0."""
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", max_retries=max_retries)], 0.0)
    assert assigned(s.take()) == {"A": [key("t", 1)]}
    s.started("A", [key("t", 1)], 0.5)
    s.agent_joined("B", ["echo"], 1, 1.0)
    assert s.take().assignments == {}
    s.agent_left("A", 3.0)
    return s, job


def test_a_lost_agents_unfinished_attempt_counts_as_a_failure_and_goes_to_the_other_agent() -> None:
    s, job = _task_lost_with_agent_a()

    assert assigned(s.take()) == {"B": [key("t", 2)]}
    assert "A" not in s.agents
    lost = events_of(job, "t")[-3]
    assert (lost.state, lost.attempt, lost.agent_id, lost.not_before) == (
        TaskState.RETRYING,
        1,
        "A",
        3.0,
    )
    assert lost.error == TaskError(
        ErrorKind.AGENT_LOST,
        "agent 'A' disconnected during attempt 1",
        True,
        0.0,
        ErrorClass.TRANSIENT,
    )
    assert trail(job, "t")[-2:] == [TaskState.QUEUED, TaskState.DISPATCHED]
    assert last_event(job, "t").agent_id == "B"
    assert job.tasks["t"].failures == 1
    assert_event_log_sound(job)


def test_losing_an_agent_with_no_retries_left_fails_its_task() -> None:
    s, job = _task_lost_with_agent_a(max_retries=0)

    assert s.take().assignments == {}
    assert job.tasks["t"].state == TaskState.FAILED
    assert last_event(job, "t").error == TaskError(
        ErrorKind.AGENT_LOST,
        "agent 'A' disconnected during attempt 1; gave up after 1 attempts: transient "
        "AGENT_LOST; gave up: retry budget of 0 used",
        False,
        0.0,
        ErrorClass.TRANSIENT,
    )
    assert_event_log_sound(job)


def test_a_late_success_from_a_lost_attempt_is_accepted_once_and_the_newer_attempt_cancelled() -> (
    None
):
    s, job = _task_lost_with_agent_a()
    s.take()
    s.agent_joined("A", ["echo"], 1, 4.0, running=[key("t", 1)])
    out = s.take()
    assert out.cancels == {"A": [key("t", 1)]}
    assert out.assignments == {}

    s.finished("A", [ok("t", 1, b"from A")], 4.5)

    assert s.take().cancels == {"B": [key("t", 2)]}
    done = last_event(job, "t")
    assert (done.state, done.attempt, done.agent_id, done.output) == (
        TaskState.SUCCEEDED,
        1,
        "A",
        b"from A",
    )

    s.finished("B", [ok("t", 2, b"from B")], 5.0)

    assert job.tasks["t"].output == b"from A"
    assert [e.output for e in job.events if e.terminal] == [b"from A"]
    assert s.counters.succeeded == 1
    assert s.counters.stale_results == 1
    assert s.agents["B"].credit == 1
    assert_event_log_sound(job)


def test_a_failure_report_for_a_superseded_attempt_is_ignored() -> None:
    s, job = _task_lost_with_agent_a()
    s.take()
    s.agent_joined("A", ["echo"], 1, 4.0, running=[key("t", 1)])
    s.take()
    events = len(job.events)

    s.finished("A", [fail("t", 1)], 4.5)

    assert s.take().cancels == {}
    assert len(job.events) == events
    task = job.tasks["t"]
    assert (task.state, task.attempt, task.agent_id, task.failures) == (
        TaskState.DISPATCHED,
        2,
        "B",
        1,
    )
    assert s.counters.stale_results == 1
    assert_event_log_sound(job)


def test_a_duplicate_result_is_ignored() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [ok("t", 1, b"first")], 1.0)
    s.finished("A", [ok("t", 1, b"second"), fail("t", 1)], 2.0)

    assert trail(job, "t") == [TaskState.QUEUED, TaskState.DISPATCHED, TaskState.SUCCEEDED]
    assert job.tasks["t"].output == b"first"
    assert last_event(job, "t").output == b"first"
    assert s.counters.stale_results == 2
    assert s.counters.succeeded == 1
    assert_event_log_sound(job)


def test_a_duplicate_failure_report_counts_one_failure() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()

    s.finished("A", [fail("t", 1), fail("t", 1)], 1.0)

    assert job.tasks["t"].failures == 1
    assert trail(job, "t").count(TaskState.RETRYING) == 1
    assert s.counters.stale_results == 1


def test_a_result_for_an_unknown_job_is_counted_stale_and_changes_nothing() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.take()

    s.finished("A", [ok("t", 1, job_id="nope")], 1.0)

    assert not s.take()
    assert s.counters.stale_results == 1


# ----------------------------------------------------------------- cancellation


def test_cancelling_a_queued_task_removes_it_from_the_queue() -> None:
    s = make()
    job = s.submit(JOB, "", [spec("t1"), spec("t2")], 0.0)

    assert s.cancel(JOB, ["t1"], "user asked", 1.0) == 1

    assert s.queued() == 1
    cancelled = last_event(job, "t1")
    assert cancelled.state == TaskState.CANCELLED
    assert cancelled.error == TaskError(
        ErrorKind.CANCELLED_BY_CLIENT, "cancelled by client: user asked"
    )
    s.agent_joined("A", ["echo"], 4, 2.0)
    assert assigned(s.take()) == {"A": [key("t2", 1)]}
    assert s.counters.cancelled == 1
    assert_event_log_sound(job)


def test_cancelling_a_pending_task_fails_its_dependents_and_it_is_never_released() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 4, 0.0)
    job = s.submit(JOB, "", [spec("a"), spec("b", "a"), spec("c", "b")], 0.0)
    s.take()

    assert s.cancel(JOB, ["b"], "", 1.0) == 1

    assert error_of(job, "b") == TaskError(ErrorKind.CANCELLED_BY_CLIENT, "cancelled by client")
    assert error_of(job, "c") == TaskError(
        ErrorKind.DEPENDENCY_FAILED, "dependency 'b' ended CANCELLED: cancelled by client"
    )
    s.finished("A", [ok("a", 1)], 2.0)
    assert s.take().assignments == {}
    assert trail(job, "b") == [TaskState.PENDING, TaskState.CANCELLED]
    assert job.done
    assert_event_log_sound(job)


def test_cancelling_a_running_task_keeps_its_slot_until_the_agent_reports_the_end() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t1"), spec("t2")], 0.0)
    assert assigned(s.take()) == {"A": [key("t1", 1)]}
    s.started("A", [key("t1", 1)], 0.5)

    assert s.cancel(JOB, ["t1"], "user asked", 1.0) == 1

    out = s.take()
    assert out.cancels == {"A": [key("t1", 1)]}
    assert out.assignments == {}
    assert job.tasks["t1"].state == TaskState.CANCELLED
    assert s.agents["A"].credit == 0

    s.finished("A", [AttemptResult(key("t1", 1), ok=False, cancelled=True)], 1.5)

    assert assigned(s.take()) == {"A": [key("t2", 1)]}
    assert job.tasks["t1"].state == TaskState.CANCELLED
    assert_event_log_sound(job)


def test_a_success_reported_after_a_cancel_does_not_undo_it() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()
    s.cancel(JOB, ["t"], "", 1.0)

    s.finished("A", [ok("t", 1, b"too late")], 1.5)

    assert job.tasks["t"].state == TaskState.CANCELLED
    assert job.tasks["t"].output == b""
    assert s.counters.succeeded == 0
    assert_event_log_sound(job)


def test_cancelling_a_task_waiting_for_its_retry_stops_the_retry() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()
    s.finished("A", [fail("t", 1)], 1.0)
    not_before = last_event(job, "t").not_before

    assert s.cancel(JOB, ["t"], "", 1.01) == 1

    assert s.take().cancels == {}
    s.tick(not_before + 1.0)
    assert s.take().assignments == {}
    assert trail(job, "t") == [
        TaskState.QUEUED,
        TaskState.DISPATCHED,
        TaskState.RETRYING,
        TaskState.CANCELLED,
    ]
    assert_event_log_sound(job)


def test_cancel_with_an_unknown_task_id_raises_before_cancelling_anything() -> None:
    s = make()
    job = s.submit(JOB, "", [spec("t1"), spec("t2")], 0.0)

    with pytest.raises(KeyError):
        s.cancel(JOB, ["t1", "ghost"], "", 1.0)
    with pytest.raises(KeyError):
        s.cancel("ghost-job", None, "", 1.0)

    assert job.tasks["t1"].state == TaskState.QUEUED
    assert s.queued() == 2


def test_cancelling_a_finished_task_changes_nothing() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.finished("A", [ok("t", 1)], 1.0)
    s.take()

    assert s.cancel(JOB, None, "", 2.0) == 0

    assert not s.take()
    assert job.tasks["t"].state == TaskState.SUCCEEDED
    assert_event_log_sound(job)


def test_cancelling_a_whole_job_cancels_every_live_task_including_pending_dependents() -> None:
    # Whether a dependent ends CANCELLED must not depend on whether it was listed before or
    # after its dependency in the submitted job.
    s = make()
    job = s.submit(JOB, "", [spec("a"), spec("b", "a"), spec("c", "b")], 0.0)

    count = s.cancel(JOB, None, "", 1.0)

    states = {t.id: t.state for t in job.tasks.values()}
    assert states == {"a": TaskState.CANCELLED, "b": TaskState.CANCELLED, "c": TaskState.CANCELLED}
    assert {error_of(job, t).kind for t in states} == {ErrorKind.CANCELLED_BY_CLIENT}
    assert count == 3
    assert_event_log_sound(job)


# ----------------------------------------------------------------- unknown handlers


def test_a_task_for_an_unknown_handler_fails_after_the_grace_period_naming_known_handlers() -> None:
    s = make(unknown_handler_grace_s=2.0)
    s.agent_joined("A", ["search", "echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", handler="nope")], 0.5)

    s.tick(1.999)
    assert job.tasks["t"].state == TaskState.QUEUED

    s.tick(2.0)

    assert trail(job, "t") == [TaskState.QUEUED, TaskState.FAILED]
    error = error_of(job, "t")
    assert error.kind == ErrorKind.UNKNOWN_HANDLER
    assert error.message.startswith(
        "no connected agent offers handler 'nope' (known handlers: echo, search);"
    )
    assert s.queued() == 0
    assert_event_log_sound(job)


def test_a_task_for_an_unknown_handler_fails_at_once_when_agents_have_settled() -> None:
    s = make(unknown_handler_grace_s=2.0)
    s.agent_joined("A", ["echo"], 1, 0.0)

    job = s.submit(JOB, "", [spec("t", handler="nope"), spec("u")], 10.0)

    assert job.tasks["t"].state == TaskState.FAILED
    assert error_of(job, "t").kind == ErrorKind.UNKNOWN_HANDLER
    assert "(known handlers: echo)" in error_of(job, "t").message
    assert assigned(s.take()) == {"A": [key("u", 1)]}
    assert_event_log_sound(job)


def test_tasks_for_an_unknown_handler_wait_while_no_agent_is_connected() -> None:
    s = make(unknown_handler_grace_s=2.0)
    s.agent_joined("A", ["llm"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t1", handler="llm")], 0.0)
    s.agent_left("A", 1.0)  # t1 goes back to the queue and no agent is left
    s.submit("j2", "", [spec("t2", handler="llm")], 10.0)

    s.tick(1_000.0)

    assert job.tasks["t1"].state == TaskState.QUEUED
    assert s.queued() == 2
    s.take()
    s.agent_joined("B", ["llm"], 2, 1_001.0)
    assert assigned(s.take()) == {"B": [key("t1", 2), key("t2", 1, "j2")]}
    assert_event_log_sound(job)


def test_an_agent_joining_within_the_grace_period_with_the_handler_runs_the_task() -> None:
    s = make(unknown_handler_grace_s=2.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", handler="nope")], 0.5)

    s.agent_joined("B", ["nope"], 1, 1.0)

    assert assigned(s.take()) == {"B": [key("t", 1)]}
    s.tick(10.0)
    assert job.tasks["t"].state == TaskState.DISPATCHED
    assert_event_log_sound(job)


def test_a_membership_change_restarts_the_grace_period() -> None:
    s = make(unknown_handler_grace_s=2.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", handler="nope")], 0.5)
    s.agent_joined("C", ["search"], 1, 1.5)

    s.tick(2.0)
    s.tick(3.499)
    assert trail(job, "t") == [TaskState.QUEUED]

    s.tick(3.5)

    assert trail(job, "t") == [TaskState.QUEUED, TaskState.FAILED]
    assert "(known handlers: echo, search)" in error_of(job, "t").message
    assert_event_log_sound(job)


def test_a_dependent_of_a_task_failed_at_submission_has_its_terminal_event_last() -> None:
    s = make(unknown_handler_grace_s=2.0)
    s.agent_joined("A", ["echo"], 1, 0.0)

    job = s.submit(JOB, "", [spec("a", handler="nope"), spec("b", "a")], 10.0)

    assert job.tasks["b"].state == TaskState.FAILED
    assert error_of(job, "b").kind == ErrorKind.DEPENDENCY_FAILED
    assert last_event(job, "b").state == TaskState.FAILED
    assert_event_log_sound(job)


# ----------------------------------------------------------------- draining and reconnecting


def test_a_draining_agent_gives_back_unstarted_attempts_without_a_failure_and_gets_no_work() -> (
    None
):
    s = make(prefetch=2, steal=False)  # B would otherwise take t2 and t3 over as it joins
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t1"), spec("t2"), spec("t3")], 0.0)
    assert assigned(s.take()) == {"A": [key("t1", 1), key("t2", 1), key("t3", 1)]}
    s.started("A", [key("t1", 1)], 0.5)
    s.agent_joined("B", ["echo"], 1, 1.0)  # credit 3
    s.take()

    s.agent_draining("A", [key("t2", 1), key("t3", 1)], 2.0)

    assert assigned(s.take()) == {"B": [key("t2", 2), key("t3", 2)]}
    for task_id in ("t2", "t3"):
        assert job.tasks[task_id].failures == 0
        assert trail(job, task_id) == [
            TaskState.QUEUED,
            TaskState.DISPATCHED,
            TaskState.QUEUED,
            TaskState.DISPATCHED,
        ]
    assert s.counters.retries == 0
    assert s.agents["A"].credit == 0

    later = s.submit("j2", "", [spec("x"), spec("y")], 3.0)
    assert assigned(s.take()) == {"B": [key("x", 1, "j2")]}
    s.finished("A", [ok("t1", 1)], 4.0)
    assert s.take().assignments == {}
    assert job.tasks["t1"].state == TaskState.SUCCEEDED
    assert later.tasks["y"].state == TaskState.QUEUED

    s.finished("B", [ok("t2", 2)], 5.0)
    assert assigned(s.take()) == {"B": [key("y", 1, "j2")]}
    assert_event_log_sound(job)
    assert_event_log_sound(later)


def _reconnected() -> tuple[Scheduler, Job]:
    """t was running on A, the only agent, when A's stream dropped at 2.0; A is back at 3.0
    and reports attempt 1 still running."""
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0)], 0.0)
    s.take()
    s.started("A", [key("t", 1)], 0.0)
    s.agent_left("A", 2.0)
    assert s.queued() == 1
    s.agent_joined("A", ["echo"], 1, 3.0, running=[key("t", 1)])
    return s, job


def test_a_reconnecting_agent_reclaims_its_running_attempt_instead_of_running_it_twice() -> None:
    s, job = _reconnected()

    out = s.take()
    assert out.assignments == {}
    assert out.cancels == {}
    task = job.tasks["t"]
    assert (task.state, task.attempt, task.agent_id) == (TaskState.RUNNING, 1, "A")
    assert s.queued() == 0
    assert s.agents["A"].credit == 0

    s.finished("A", [ok("t", 1)], 4.0)

    done = last_event(job, "t")
    assert (done.state, done.attempt, done.agent_id) == (TaskState.SUCCEEDED, 1, "A")
    assert s.agents["A"].credit == 1
    assert_event_log_sound(job)


def test_a_reconnecting_agent_is_told_to_cancel_an_attempt_older_than_the_current_one() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    assert assigned(s.take()) == {"A": [key("t", 1)]}
    s.agent_joined("B", ["echo"], 1, 1.0)
    s.agent_left("A", 2.0)
    assert assigned(s.take()) == {"B": [key("t", 2)]}
    s.agent_left("B", 3.0)  # attempt 2 is lost too; t waits in the queue

    s.agent_joined("A", ["echo"], 1, 4.0, running=[key("t", 1)])

    out = s.take()
    assert out.cancels == {"A": [key("t", 1)]}
    assert assigned(out) == {"A": [key("t", 3)]}
    assert job.tasks["t"].failures == 2
    assert_event_log_sound(job)


def test_a_reclaimed_attempt_is_reported_running_again() -> None:
    _, job = _reconnected()

    reclaimed = last_event(job, "t")

    assert (reclaimed.state, reclaimed.attempt, reclaimed.agent_id) == (TaskState.RUNNING, 1, "A")


def test_a_reclaimed_attempt_keeps_its_original_deadline() -> None:
    s, job = _reconnected()
    s.take()

    s.tick(14.999)
    assert s.take().cancels == {}
    s.tick(15.0)

    assert s.take().cancels == {"A": [key("t", 1)]}
    assert last_event(job, "t").error is not None
    assert_event_log_sound(job)


def test_a_reconnecting_agent_is_told_to_cancel_attempts_that_are_no_longer_current() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.finished("A", [ok("t", 1)], 1.0)
    s.agent_left("A", 2.0)
    s.take()

    s.agent_joined("A", ["echo"], 1, 3.0, running=[key("t", 1), key("x", 1, "gone-job")])

    assert s.take().cancels == {"A": [key("t", 1), key("x", 1, "gone-job")]}
    assert s.agents["A"].credit == 1
    assert_event_log_sound(job)


# ----------------------------------------------------------------- expiry and timers


def test_a_finished_job_expires_after_the_retention_period() -> None:
    s = make(job_retention_s=600.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    unfinished = s.submit("j2", "", [spec("u", timeout_s=1e6)], 0.0)
    s.finished("A", [ok("t", 1)], 5.0)
    assert job.finished_at == 5.0
    s.take()

    s.tick(604.999)
    assert s.take().expired_jobs == []
    assert JOB in s.jobs

    s.tick(605.0)

    assert s.take().expired_jobs == [JOB]
    assert JOB not in s.jobs
    s.tick(100_000.0)
    assert s.take().expired_jobs == []
    assert s.jobs == {"j2": unfinished}


def test_a_result_arriving_after_its_job_expired_is_ignored() -> None:
    s = make(prefetch=1, job_retention_s=10.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.submit(JOB, "", [spec("t")], 0.0)
    s.cancel(JOB, None, "", 1.0)
    s.tick(11.0)
    assert s.take().expired_jobs == [JOB]

    s.finished("A", [ok("t", 1)], 12.0)

    assert s.counters.stale_results == 1
    assert s.agents["A"].credit == 2
    assert not s.take()


def _push_through(s: Scheduler, agent: str, now: float) -> tuple[float, int]:
    """Report every attempt assigned so far as done, one batch per call, until nothing is left
    in flight on ``agent``. Returns the final time and the largest timer heap seen."""
    largest = len(s._timers)
    in_flight = s.agents[agent].in_flight
    while in_flight:
        now += 0.001
        batch = [AttemptResult(k, ok=True) for k in list(in_flight)]
        s.finished(agent, batch, now)
        s.take()
        largest = max(largest, len(s._timers))
    return now, largest


def test_the_timer_heap_stays_bounded_while_twenty_thousand_tasks_pass_through() -> None:
    s = make(prefetch=2)
    s.agent_joined("A", ["echo"], 100, 0.0)
    job = s.submit(JOB, "", [spec(f"t{i}") for i in range(20_000)], 0.0)

    _, largest = _push_through(s, "A", 0.0)

    assert s.counters.succeeded == 20_000
    assert job.done
    assert largest < 10_000
    assert_event_log_sound(job)


def test_compacting_the_timer_heap_keeps_the_deadlines_of_unfinished_attempts() -> None:
    s = make(timeout_grace_s=5.0)
    s.agent_joined("A", ["slow"], 1, 0.0)
    s.agent_joined("B", ["echo"], 100, 0.0)
    hung = s.submit("h", "", [spec("hung", handler="slow", timeout_s=1_000.0)], 0.0)
    assert assigned(s.take()) == {"A": [key("hung", 1, "h")]}
    s.started("A", [key("hung", 1, "h")], 0.0)
    quick = s.submit(JOB, "", [spec(f"t{i}") for i in range(12_000)], 0.0)

    _, largest = _push_through(s, "B", 0.0)

    assert quick.done
    assert largest < 12_000
    s.tick(1_004.999)
    assert s.take().cancels == {}
    s.tick(1_005.0)
    assert s.take().cancels == {"A": [key("hung", 1, "h")]}
    assert last_event(hung, "hung").state == TaskState.RETRYING
    assert_event_log_sound(hung)


def test_an_attempt_never_started_is_not_timed_out_while_its_agent_is_alive() -> None:
    # Waiting in a busy agent's prefetch is no start-to-close breach: the deadline is re-armed.
    s = make(timeout_grace_s=5.0, agent_silence_s=1e9)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t", timeout_s=10.0)], 0.0)
    s.take()

    s.tick(15.0)

    assert s.take().cancels == {}
    assert job.tasks["t"].state == TaskState.DISPATCHED
    s.started("A", [key("t", 1)], 20.0)
    s.tick(34.999)
    assert s.take().cancels == {}
    s.tick(35.0)
    assert s.take().cancels == {"A": [key("t", 1)]}


def test_a_silent_agent_is_disconnected_and_its_attempts_run_elsewhere() -> None:
    s = make(agent_silence_s=15.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t")], 0.0)
    s.take()
    s.agent_joined("B", ["echo"], 1, 1.0)
    s.heartbeat("B", 0, 0.0, 0.0, 14.0)
    s.take()

    s.tick(15.0)

    out = s.take()
    assert out.disconnects == ["A"]
    assert "A" not in s.agents
    assert assigned(out) == {"B": [key("t", 2)]}
    assert last_event(job, "t").state == TaskState.DISPATCHED
    assert_event_log_sound(job)


def test_a_silent_agent_is_declared_dead_at_the_limit_after_its_last_message() -> None:
    s = make(agent_silence_s=15.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    for second in range(1, 11):
        s.heartbeat("A", 0, 0.0, 0.0, float(second))  # then it hangs: last message at 10 s
    s.take()

    declared_dead_at = None
    for step in range(1, 81):
        now = 10.0 + step * 0.25
        s.tick(now)
        if s.take().disconnects == ["A"]:
            declared_dead_at = now
            break

    assert declared_dead_at == 25.0  # 15 s after its last message, not up to 7.5 s later


@pytest.mark.timeout(10)
def test_a_liveness_check_on_a_rounding_boundary_ends_the_agent_and_does_not_spin() -> None:
    # 15.1 - 15.0 rounds below 0.1: judged by ``last <= now - silence`` the agent was spared
    # while its next check (``last + silence``) was due at ``now``, rescheduled for ever.
    s = make(agent_silence_s=15.0)
    s.agent_joined("A", ["echo"], 1, 0.0)
    s.heartbeat("A", 0, 0.0, 0.0, 0.1)
    s.take()

    s.tick(15.1)

    assert s.take().disconnects == ["A"]


def test_an_agents_prefetch_grows_with_its_slots_but_never_below_the_floor() -> None:
    s = make(prefetch=2, prefetch_fraction=0.125)
    s.agent_joined("small", ["echo"], 4, 0.0)
    s.agent_joined("big", ["echo"], 64, 0.0)

    assert s.agents["small"].credit == 4 + 2
    assert s.agents["big"].credit == 64 + 8


def test_an_agent_gets_no_more_attempts_of_a_capped_handler_than_its_cap() -> None:
    s = make()
    s.agent_joined("A", ["llm", "echo"], 8, 0.0, handler_slots={"llm": 2, "echo": 0})
    job = s.submit(JOB, "", [spec(f"l{i}", handler="llm") for i in range(5)], 0.0)

    assert assigned(s.take()) == {"A": [key("l0", 1), key("l1", 1)]}
    other = s.submit("j2", "", [spec(f"e{i}") for i in range(3)], 0.0)
    # Uncapped handlers still use the agent's remaining slots.
    assert assigned(s.take()) == {"A": [key(f"e{i}", 1, "j2") for i in range(3)]}

    s.finished("A", [ok("l0", 1)], 1.0)

    assert assigned(s.take()) == {"A": [key("l2", 1)]}
    assert s.agents["A"].capped_in_flight == {"llm": 2}
    assert_event_log_sound(job)
    assert_event_log_sound(other)


def test_a_cap_at_or_above_the_agents_slots_caps_nothing() -> None:
    s = make()
    s.agent_joined("A", ["llm"], 4, 0.0, handler_slots={"llm": 4})

    s.submit(JOB, "", [spec(f"l{i}", handler="llm") for i in range(6)], 0.0)

    assert len(assigned(s.take())["A"]) == 4
    assert s.agents["A"].handler_caps == {}
