"""Scheduler, driven with a fake clock: unknown handlers, draining and reconnecting agents,
job expiry, the timer heap, liveness and handler caps."""

from __future__ import annotations

import pytest

from deerflow_controller.core.model import (
    ErrorKind,
    Job,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

from .scheduling import (
    JOB,
    assert_event_log_sound,
    assigned,
    error_of,
    key,
    last_event,
    make,
    ok,
    spec,
    trail,
)

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
