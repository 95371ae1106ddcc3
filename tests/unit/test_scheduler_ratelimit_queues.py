"""The scheduler with the rate limiter: fairness and order on a key, cancelling throttled
tasks, every attempt end freeing its slot once, and tasks given back, blocked or retried."""

from __future__ import annotations

from deerflow_controller.core.model import (
    Job,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler
from deerflow_controller.ratelimit import KeyLimits

from .ratelimiting import (
    KEY,
    ONE_PER_SECOND,
    admissions,
    assert_slots_settled,
    assigned_ids,
    gate,
    keyed_spec,
    limited,
    ok,
    specs,
)
from .scheduling import JOB, assert_event_log_sound, events_of, key, run_timers, trail

# ----------------------------------------------------------------- fairness and order


def test_two_tenants_on_one_key_are_admitted_in_turn_while_both_wait() -> None:
    s = limited({KEY: ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 1000, 0.0)
    a = s.submit("ja", "", specs(100, KEY, prefix="a", tenant="A"), 0.0)
    b = s.submit("jb", "", specs(10, KEY, prefix="b", tenant="B"), 0.5)

    run_timers(s, 23.0)

    order = [task_id for _, task_id in admissions(a, b)]
    alternating = [name for k in range(10) for name in (f"a{k + 1}", f"b{k}")]
    assert order == ["a0", *alternating, "a11", "a12", "a13"]
    assert [t for t, _ in admissions(a, b)] == [float(t) for t in range(24)]
    assert_event_log_sound(a)
    assert_event_log_sound(b)


def test_within_a_tenant_higher_priority_is_admitted_first_then_arrival() -> None:
    s = limited({KEY: ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(
        JOB,
        "",
        [
            keyed_spec("low", KEY, priority=1),
            keyed_spec("mid", KEY, priority=3),
            keyed_spec("high", KEY, priority=5),
            keyed_spec("mid2", KEY, priority=3),
            keyed_spec("none", KEY),
        ],
        0.0,
    )

    run_timers(s, 4.0)

    assert admissions(job) == [
        (0.0, "high"),
        (1.0, "mid"),
        (2.0, "mid2"),
        (3.0, "low"),
        (4.0, "none"),
    ]
    assert_event_log_sound(job)


def two_key_tasks() -> tuple[Scheduler, Job]:
    s = limited({"a": ONE_PER_SECOND, "b": KeyLimits(concurrency=1, adaptive=False)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", [keyed_spec("x", "a", "b"), keyed_spec("y", "a", "b")], 0.0)
    assert assigned_ids(s.take()) == ["x"]
    assert job.tasks["x"].rate_hold == [("a", 1000.0), ("b", 1000.0)]
    return s, job


def test_a_task_with_two_keys_waits_for_the_second_when_the_first_has_room() -> None:
    s, job = two_key_tasks()

    run_timers(s, 10.0)
    s.tick(10.0)
    assert assigned_ids(s.take()) == []  # a has room since t=1; b is full

    s.finished("A", [ok("x", 1)], 10.0)
    assert assigned_ids(s.take()) == ["y"]
    assert (gate(s, "a").stats.admitted, gate(s, "b").stats.admitted) == (2, 2)
    assert_event_log_sound(job)


def test_a_task_with_two_keys_waits_for_the_first_when_the_second_has_room() -> None:
    s, job = two_key_tasks()

    s.finished("A", [ok("x", 1)], 0.25)
    assert assigned_ids(s.take()) == []  # b is free; a refills at t=1
    run_timers(s, 1.0)

    assert assigned_ids(s.take()) == ["y"]
    assert events_of(job, "y")[1].time == 1.0
    assert_event_log_sound(job)


# ----------------------------------------------------------------- cancelling


def test_cancelling_a_throttled_task_removes_it_without_admitting_or_charging_it() -> None:
    s = limited({KEY: ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(6, KEY), 0.0)
    assert assigned_ids(s.take()) == ["t0"]

    assert s.cancel(JOB, ["t2"], "not needed", 0.5) == 1
    run_timers(s, 10.0)

    assert trail(job, "t2") == [TaskState.THROTTLED, TaskState.CANCELLED]
    assert job.tasks["t2"].rate_hold is None
    assert admissions(job) == [(0.0, "t0"), (1.0, "t1"), (2.0, "t3"), (3.0, "t4"), (4.0, "t5")]
    assert (gate(s).stats.admitted, gate(s).in_flight) == (5, 5)
    assert_event_log_sound(job)


def test_a_cancelled_throttled_task_no_longer_counts_as_waiting_on_its_key() -> None:
    s = limited({KEY: ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(10, KEY), 0.0)
    assert (gate(s).waiting, s.limiter.waiting) == (9, 9)

    s.cancel(JOB, ["t5"], "", 0.5)

    assert (gate(s).waiting, s.limiter.waiting) == (8, 8)
    assert_event_log_sound(job)


def test_cancelling_a_whole_job_of_throttled_tasks_leaves_nothing_waiting() -> None:
    s = limited({KEY: ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(10, KEY), 0.0)

    s.cancel(JOB, None, "", 0.5)
    run_timers(s, 20.0)

    assert admissions(job) == [(0.0, "t0")]
    assert s.limiter.waiting == 0
    assert gate(s).in_flight == 0
    assert_slots_settled(s)
    assert_event_log_sound(job)


# ----------------------------------------------------------------- every attempt end frees its slot

# A bystander holds one slot on another agent throughout, so that a slot given back twice
# would show as in_flight 0 instead of 1 before the bystander ends.


def with_bystander(subject: TaskSpec) -> tuple[Scheduler, Job]:
    s = limited({KEY: KeyLimits(concurrency=3, adaptive=False)})
    s.agent_joined("H", ["hold"], 1, 0.0)
    s.submit("by", "", [keyed_spec("by", KEY, handler="hold")], 0.0)
    s.agent_joined("A", ["llm"], 1, 0.0)
    job = s.submit(JOB, "", [subject], 0.0)
    out = s.take()
    assert [t.id for t in out.assignments["H"]] == ["by"]
    assert assigned_ids(out) == [subject.id]
    assert gate(s).in_flight == 2
    return s, job


def end_bystander(s: Scheduler, job: Job, now: float) -> None:
    assert gate(s).in_flight == 1, "the subject's slot was not given back exactly once"
    s.finished("H", [ok("by", 1, "by")], now)
    assert_slots_settled(s)
    assert job.tasks["x"].terminal
    assert_event_log_sound(job)


def test_a_success_gives_the_slot_back_once() -> None:
    s, job = with_bystander(keyed_spec("x", KEY))

    s.finished("A", [ok("x", 1)], 1.0)
    s.finished("A", [ok("x", 1)], 1.5)  # a duplicate report

    end_bystander(s, job, 2.0)


def test_a_failure_and_its_retry_each_give_the_slot_back_once() -> None:
    s, job = with_bystander(keyed_spec("x", KEY))

    s.finished("A", [AttemptResult(key("x", 1), ok=False)], 1.0)
    assert gate(s).in_flight == 1
    run_timers(s, 2.0)
    assert assigned_ids(s.take()) == ["x"]
    assert gate(s).in_flight == 2
    s.finished("A", [ok("x", 2)], 3.0)

    end_bystander(s, job, 4.0)


def test_a_final_failure_gives_the_slot_back_once() -> None:
    s, job = with_bystander(keyed_spec("x", KEY, max_retries=0))

    s.finished("A", [AttemptResult(key("x", 1), ok=False)], 1.0)

    assert job.tasks["x"].state == TaskState.FAILED
    end_bystander(s, job, 2.0)


def test_an_agent_loss_gives_the_slot_back_once_and_the_retry_takes_a_new_one() -> None:
    s, job = with_bystander(keyed_spec("x", KEY))
    s.agent_joined("B", ["llm"], 1, 0.5)

    s.agent_left("A", 1.0)

    assert assigned_ids(s.take(), "B") == ["x"]
    assert gate(s).in_flight == 2
    s.finished("B", [ok("x", 2)], 2.0)
    end_bystander(s, job, 3.0)


def test_a_timeout_gives_the_slot_back_once() -> None:
    s, job = with_bystander(keyed_spec("x", KEY, timeout_s=10.0, max_retries=0))
    s.started("A", [key("x", 1)], 0.0)

    run_timers(s, 15.0)  # 10 s plus 5 s of grace
    assert job.tasks["x"].state == TaskState.TIMED_OUT
    assert gate(s).in_flight == 1
    s.finished("A", [AttemptResult(key("x", 1), ok=False, cancelled=True)], 16.0)

    end_bystander(s, job, 17.0)


def test_a_late_success_after_a_timeout_frees_the_retrys_slot_once() -> None:
    s, job = with_bystander(keyed_spec("x", KEY, timeout_s=10.0))
    s.started("A", [key("x", 1)], 0.0)
    s.agent_joined("B", ["llm"], 1, 0.5)
    run_timers(s, 16.0)  # timed out at 15, retried on B after the backoff
    assert assigned_ids(s.take(), "B") == ["x"]
    assert gate(s).in_flight == 2

    s.finished("A", [ok("x", 1)], 17.0)

    assert job.tasks["x"].state == TaskState.SUCCEEDED
    assert gate(s).in_flight == 1
    s.finished("B", [AttemptResult(key("x", 2), ok=False, cancelled=True)], 18.0)
    end_bystander(s, job, 19.0)


def test_cancelling_a_dispatched_task_gives_the_slot_back_once() -> None:
    s, job = with_bystander(keyed_spec("x", KEY))

    s.cancel(JOB, ["x"], "", 1.0)
    assert s.take().cancels == {"A": [key("x", 1)]}
    s.finished("A", [AttemptResult(key("x", 1), ok=False, cancelled=True)], 2.0)

    assert job.tasks["x"].state == TaskState.CANCELLED
    end_bystander(s, job, 3.0)


def test_an_attempt_a_draining_agent_gives_back_frees_its_slot_once() -> None:
    s, job = with_bystander(keyed_spec("x", KEY))
    s.agent_joined("B", ["llm"], 1, 0.5)

    s.agent_draining("A", [key("x", 1)], 1.0)

    assert assigned_ids(s.take(), "B") == ["x"]
    assert gate(s).in_flight == 2
    s.finished("B", [ok("x", 2)], 2.0)
    end_bystander(s, job, 3.0)


# ----------------------------------------------------------------- given back, blocked, retried


def test_a_task_a_draining_agent_gives_back_is_not_charged_its_rate_budget_again() -> None:
    s = limited({KEY: ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 1, 0.0)
    job = s.submit(JOB, "", [keyed_spec("x", KEY)], 0.0)
    assert assigned_ids(s.take()) == ["x"]
    s.agent_joined("B", ["llm"], 1, 0.25)

    s.agent_draining("A", [key("x", 1)], 0.5)

    # Its request was never sent: it goes to B at once, not when the bucket refills at t=1.
    assert assigned_ids(s.take(), "B") == ["x"]
    assert (gate(s).stats.admitted, gate(s).in_flight) == (1, 1)
    s.finished("B", [ok("x", 2)], 0.75)
    assert_slots_settled(s)
    assert_event_log_sound(job)


def test_a_task_whose_second_key_is_full_does_not_block_the_first_keys_line() -> None:
    s = limited(
        {
            "a": KeyLimits(concurrency=10, adaptive=False),
            "b": KeyLimits(concurrency=1, adaptive=False),
        }
    )
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", [keyed_spec("holds-b", "b"), keyed_spec("x", "a", "b")], 0.0)
    assert assigned_ids(s.take()) == ["holds-b"]

    s.submit("j2", "", specs(3, "a", prefix="y"), 0.5)

    assert assigned_ids(s.take()) == ["y0", "y1", "y2"]  # x waits on b, not in a's line
    assert job.tasks["x"].state == TaskState.THROTTLED
    assert (gate(s, "a").waiting, gate(s, "b").waiting) == (0, 1)
    s.finished("A", [ok("holds-b", 1)], 1.0)
    assert assigned_ids(s.take()) == ["x"]
    assert job.tasks["x"].rate_hold == [("a", 1000.0), ("b", 1000.0)]
    assert_event_log_sound(job)


def test_a_blocked_two_key_task_keeps_its_place_when_it_moves_between_lines() -> None:
    s = limited({"a": ONE_PER_SECOND, "b": KeyLimits(concurrency=1, adaptive=False)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", [keyed_spec("holds-b", "b"), keyed_spec("x", "a", "b")], 0.0)
    assert assigned_ids(s.take()) == ["holds-b"]
    s.submit("j2", "", specs(3, "a", prefix="y"), 0.5)
    assert assigned_ids(s.take()) == ["y0"]  # a's budget goes on while x waits for b

    s.finished("A", [ok("holds-b", 1)], 1.2)  # b has room now, a again at t=1.5
    assert assigned_ids(s.take()) == []
    run_timers(s, 1.5)

    assert assigned_ids(s.take()) == ["x"]  # ahead of y1, which came after it
    assert_event_log_sound(job)


def test_a_retried_rate_keyed_task_keeps_its_place_on_its_key() -> None:
    s = limited({KEY: ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(4, KEY), 0.0)
    assert assigned_ids(s.take()) == ["t0"]

    s.finished("A", [AttemptResult(key("t0", 1), ok=False)], 0.1)
    run_timers(s, 3.0)

    assert admissions(job) == [(0.0, "t0"), (1.0, "t0"), (2.0, "t1"), (3.0, "t2")]
    assert_event_log_sound(job)


def test_a_task_moved_to_an_idle_agent_is_not_charged_its_rate_budget_again() -> None:
    s = limited({KEY: KeyLimits(concurrency=10, adaptive=False)}, prefetch=2)
    s.agent_joined("A", ["llm"], 1, 0.0)
    work = [TaskSpec(f"t{i}", "llm", rate_keys=(KEY,), est_duration_s=10.0) for i in range(3)]
    job = s.submit(JOB, "", work, 0.0)
    assert assigned_ids(s.take()) == ["t0", "t1", "t2"]
    s.started("A", [key("t0", 1)], 0.1)
    s.agent_joined("B", ["llm"], 1, 1.0)

    moved = assigned_ids(s.take(), "B")

    assert len(moved) == 1 and s.counters.stolen == 1
    # Its request was never sent: three admissions in all, three slots held, none twice.
    assert (gate(s).stats.admitted, gate(s).in_flight) == (3, 3)
    (stolen,) = moved
    s.finished("A", [AttemptResult(key(stolen, 1), ok=False, cancelled=True)], 1.1)
    assert gate(s).in_flight == 3
    s.finished("B", [ok(stolen, 2)], 2.0)
    for t in ("t0", "t1", "t2"):
        if t != stolen:
            s.started("A", [key(t, 1)], 2.0)
            s.finished("A", [ok(t, 1)], 3.0)
            s.take()
    assert all(t.state == TaskState.SUCCEEDED for t in job.tasks.values())
    assert_slots_settled(s)
    assert_event_log_sound(job)


def test_an_attempt_reclaimed_after_its_agent_was_given_up_holds_its_rate_slot_again() -> None:
    s = limited({KEY: KeyLimits(concurrency=1, adaptive=False)})
    s.agent_joined("A", ["llm"], 1, 0.0)
    job = s.submit(JOB, "", [keyed_spec("x", KEY, max_retries=3)], 0.0)
    assert assigned_ids(s.take()) == ["x"]
    s.started("A", [key("x", 1)], 0.1)
    s.agent_left("A", 1.0)  # given up: the attempt failed, its slot went back
    assert gate(s).in_flight == 0
    assert job.tasks["x"].rate_hold is None

    # The agent comes back still running attempt 1: it keeps it, and it holds the key's one
    # slot while it runs, so nothing else is admitted past the key's concurrency meanwhile.
    s.agent_joined("A", ["llm"], 2, 1.5, running=[key("x", 1)])
    s.submit("j2", "", [keyed_spec("y", KEY)], 1.5)

    assert job.tasks["x"].state == TaskState.RUNNING
    assert gate(s).in_flight == 1
    assert assigned_ids(s.take()) == []
    s.finished("A", [ok("x", 1)], 2.0)
    assert gate(s).in_flight == 1  # now y's
    assert assigned_ids(s.take()) == ["y"]
    s.finished("A", [ok("y", 1, job_id="j2")], 3.0)
    assert_slots_settled(s)
    assert_event_log_sound(job)


def test_a_task_held_only_for_an_agent_slot_says_so_and_is_not_counted_as_a_wait_on_its_key() -> (
    None
):
    s = limited({KEY: KeyLimits(concurrency=10, adaptive=False), "full": ONE_PER_SECOND})
    s.agent_joined("A", ["llm"], 1, 0.0)
    s.submit(JOB, "", [keyed_spec("first", "full")], 0.0)
    assert assigned_ids(s.take()) == ["first"]  # "full" has no room until t=1

    job = s.submit("j2", "", [keyed_spec("slot", KEY), keyed_spec("key", "full")], 0.1)

    said = {e.task_id: e.detail for e in job.events if e.state == TaskState.THROTTLED}
    assert said == {"slot": "waiting for a free agent slot; its rate keys have room", "key": ""}
    assert gate(s).stats.waited == 0
    assert gate(s, "full").stats.waited == 1
    assert_event_log_sound(job)
