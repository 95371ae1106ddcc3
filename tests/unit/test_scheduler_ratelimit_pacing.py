"""The scheduler with the rate limiter: pacing, concurrency limits, 429s and pauses, token
budgets and learning a key's rate. Driven with a fake clock ticked at ``next_timer()``."""

from __future__ import annotations

import pytest

from deerflow_common import signals
from deerflow_controller.core.model import (
    Job,
    TaskState,
)
from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.ratelimit import KeyLimits
from deerflow_controller.ratelimit.limiter import DEFAULT_PAUSE_S

from .ratelimiting import (
    KEY,
    ONE_PER_SECOND,
    RPM_600,
    admission_times,
    assert_slots_settled,
    assigned_ids,
    gate,
    limited,
    ok,
    rate_limited,
    specs,
    status,
)
from .scheduling import JOB, assert_event_log_sound, events_of, run_timers, trail

# ----------------------------------------------------------------- pacing


def test_a_burst_on_a_600_rpm_key_admits_the_buckets_depth_and_throttles_the_rest() -> None:
    s = limited({"llm/*": RPM_600})
    s.agent_joined("A", ["llm"], 100, 0.0)

    job = s.submit(JOB, "", specs(10, KEY), 0.0)

    assert assigned_ids(s.take()) == ["t0", "t1", "t2", "t3"]  # 4.9 deep
    for i in range(4):
        assert trail(job, f"t{i}") == [TaskState.QUEUED, TaskState.DISPATCHED]
    for i in range(4, 10):
        assert trail(job, f"t{i}") == [TaskState.THROTTLED]
        assert job.tasks[f"t{i}"].state == TaskState.THROTTLED
    assert (gate(s).stats.admitted, gate(s).stats.waited, s.limiter.waiting) == (4, 6, 6)
    assert s.next_timer() == pytest.approx(0.1 / 9.8)  # the bucket holds 0.9 of a request
    assert_event_log_sound(job)


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
def test_ticking_at_next_timer_admits_200_tasks_at_the_rate_and_never_faster(
    adaptive: bool,
) -> None:
    s = limited({KEY: KeyLimits(rpm=600, adaptive=adaptive)})
    s.agent_joined("A", ["llm"], 1000, 0.0)
    job = s.submit(JOB, "", specs(200, KEY), 0.0)

    last, repeats = 0.0, 0
    while len(admission_times(job)) < 200:
        if adaptive:  # attempts end at once, so the AIMD concurrency limit never binds
            sent = s.take().assignments.get("A", [])
            s.finished("A", [ok(t.id, t.attempt, **status("200")) for t in sent], last)
        when = s.next_timer()
        assert when is not None
        repeats = repeats + 1 if when == last else 0
        assert repeats < 20, (
            f"next_timer() stays at {when!r} with {len(admission_times(job))} of 200 admitted"
        )
        s.tick(when)
        last = when

    times = admission_times(job)
    # The bucket starts 4.9 deep and refills at 9.8/s: the k-th admission (from 0) is at
    # (k + 1 - 4.9) / 9.8 once the first four went at once.
    expected = [0.0] * 4 + [(k + 1 - 4.9) / 9.8 for k in range(4, 200)]
    assert times == pytest.approx(expected, abs=1e-9)
    for i in range(200):
        for j in range(i, 200):
            allowed = 9.8 * (times[j] - times[i]) + 4.9 + 1e-9
            assert j - i + 1 <= allowed, f"{j - i + 1} admitted in [{times[i]}, {times[j]}]"
    for i in range(200):
        states = trail(job, f"t{i}")
        throttled = [TaskState.THROTTLED] if i >= 4 else []
        assert states[: len(throttled) + 2] == [*throttled, TaskState.QUEUED, TaskState.DISPATCHED]
    assert gate(s).stats.waited == 196
    assert_event_log_sound(job)


def test_tasks_admitted_while_no_agent_can_run_them_are_not_sent_in_one_burst() -> None:
    """The provider sees requests when agents run them: ten seconds of admissions banked in
    the ready queue must not all go out the moment an agent joins."""
    s = limited({KEY: ONE_PER_SECOND})
    job = s.submit(JOB, "", specs(30, KEY), 0.0)
    run_timers(s, 10.0)

    s.agent_joined("A", ["llm"], 100, 10.0)

    sent = assigned_ids(s.take())
    assert len(sent) <= 1, f"{len(sent)} requests sent at once on a one-deep 1/s key"
    assert_event_log_sound(job)


def test_tasks_without_rate_keys_bypass_the_limiter() -> None:
    s = limited({"*": ONE_PER_SECOND}, default=ONE_PER_SECOND)
    s.agent_joined("A", ["llm"], 100, 0.0)

    job = s.submit(JOB, "", specs(50), 0.0)

    assert assigned_ids(s.take()) == [f"t{i}" for i in range(50)]
    assert s.limiter.gates == {}
    assert all(trail(job, f"t{i}") == [TaskState.QUEUED, TaskState.DISPATCHED] for i in range(50))
    s.finished("A", [ok(f"t{i}", 1, **status("429")) for i in range(50)], 1.0)
    assert s.limiter.gates == {}
    assert all(t.state == TaskState.SUCCEEDED for t in job.tasks.values())
    assert_event_log_sound(job)


# ----------------------------------------------------------------- concurrency


def test_a_concurrency_limit_holds_and_a_finishing_attempt_admits_the_next() -> None:
    s = limited({KEY: KeyLimits(concurrency=2, adaptive=False)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(5, KEY), 0.0)
    assert assigned_ids(s.take()) == ["t0", "t1"]
    assert s.limiter.next_release(0.0) is None  # only a finishing attempt makes room

    run_timers(s, 100.0)
    s.tick(100.0)
    assert assigned_ids(s.take()) == []
    assert gate(s).in_flight == 2

    s.finished("A", [ok("t0", 1)], 100.0)
    assert assigned_ids(s.take()) == ["t2"]
    assert [e.time for e in events_of(job, "t2")] == [0.0, 100.0, 100.0]
    assert gate(s).in_flight == 2

    for step, (done, nxt) in enumerate([("t1", ["t3"]), ("t2", ["t4"]), ("t3", [])]):
        s.finished("A", [ok(done, 1)], 101.0 + step)
        assert assigned_ids(s.take()) == nxt
    s.finished("A", [ok("t4", 1)], 110.0)
    assert_slots_settled(s)
    assert_event_log_sound(job)


def test_a_429_shrinks_the_adaptive_concurrency_limit() -> None:
    # 98/s, 49 deep: only concurrency binds. A key with a configured rate starts its AIMD
    # limit at max_concurrency.
    s = limited({KEY: KeyLimits(rpm=6000, max_concurrency=8)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(12, KEY, max_retries=0), 0.0)
    assert len(assigned_ids(s.take())) == 8
    aimd = gate(s).concurrency
    assert aimd is not None

    s.finished("A", [rate_limited("t0", 1, retry_after="0")], 5.0)
    assert aimd.limit == pytest.approx(6.4)
    assert gate(s).in_flight == 7

    s.finished("A", [ok("t1", 1, **status("200"))], 5.0)
    assert assigned_ids(s.take()) == []  # 6 in flight, limit 6.4 + 1 / 6.4
    requests = gate(s).requests
    assert requests is not None and requests.can_take(1.0, 5.0)  # the bucket has room

    s.finished("A", [ok("t2", 1, **status("200"))], 5.0)
    assert assigned_ids(s.take()) == ["t8"]
    assert gate(s).in_flight == 6
    assert_event_log_sound(job)


# ----------------------------------------------------------------- 429 and pauses


def test_a_429_with_retry_after_pauses_the_key_until_exactly_then() -> None:
    s = limited({KEY: KeyLimits(concurrency=1, adaptive=False)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(3, KEY, max_retries=0), 0.0)
    assert assigned_ids(s.take()) == ["t0"]

    s.finished("A", [rate_limited("t0", 1, retry_after="2.5")], 10.0)
    # A 429 is retried on its own budget (the provider did no work), whatever max_retries says,
    # no sooner than its Retry-After.
    assert job.tasks["t0"].state == TaskState.QUEUED
    assert events_of(job, "t0")[-1].not_before == 12.5
    assert gate(s).in_flight == 0

    run_timers(s, 12.49)
    s.tick(12.49)
    assert assigned_ids(s.take()) == []
    assert s.next_timer() == 12.5
    run_timers(s, 12.5)
    assert assigned_ids(s.take()) == ["t0"]  # the retry keeps its place ahead of t1
    assert [e.time for e in events_of(job, "t0") if e.state == TaskState.QUEUED] == [0.0, 12.5]
    assert gate(s).stats.rate_limited == 1
    assert_event_log_sound(job)


def test_a_429_without_retry_after_pauses_the_key_for_the_default_pause() -> None:
    s = limited({KEY: KeyLimits(concurrency=1, adaptive=False)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(3, KEY, max_retries=0), 0.0)
    assert assigned_ids(s.take()) == ["t0"]

    s.finished("A", [rate_limited("t0", 1)], 10.0)

    run_timers(s, 10.0 + DEFAULT_PAUSE_S - 0.01)
    s.tick(10.0 + DEFAULT_PAUSE_S - 0.01)
    assert assigned_ids(s.take()) == []
    run_timers(s, 10.0 + DEFAULT_PAUSE_S)
    assert assigned_ids(s.take()) == ["t1"]
    assert events_of(job, "t1")[1].time == 11.0
    assert_event_log_sound(job)


def test_a_429d_task_is_retried_through_the_limiter() -> None:
    s = limited({KEY: KeyLimits(concurrency=1, adaptive=False)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(1, KEY), 0.0)
    assert assigned_ids(s.take()) == ["t0"]

    s.finished("A", [rate_limited("t0", 1, retry_after="3")], 10.0)
    run_timers(s, 13.0)

    assert assigned_ids(s.take()) == ["t0"]
    # The retry itself waits for the Retry-After (a floor under its jitter), so it reaches the
    # limiter exactly when the key's pause ends and is admitted at once.
    assert trail(job, "t0") == [
        TaskState.QUEUED,
        TaskState.DISPATCHED,
        TaskState.RETRYING,
        TaskState.QUEUED,
        TaskState.DISPATCHED,
    ]
    retrying, queued = events_of(job, "t0")[2:4]
    assert retrying.not_before == queued.time == 13.0
    assert retrying.detail.startswith(
        "rate-limited HANDLER_ERROR (HTTP 429); retry 1 of 8 in 3.00 s"
    )
    assert gate(s).in_flight == 1
    assert_event_log_sound(job)


# ----------------------------------------------------------------- tokens


TPM = KeyLimits(tpm=61_440, safety=1.0, adaptive=False)
"""1,024 tokens a second, 512 deep."""


def two_token_tasks() -> tuple[Scheduler, Job]:
    s = limited({KEY: TPM})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(2, KEY, est_tokens=400.0), 0.0)
    assert assigned_ids(s.take()) == ["t0"]  # 112 tokens left: t1 is due at 0.28125
    assert trail(job, "t1") == [TaskState.THROTTLED]
    return s, job


def test_reported_usage_below_the_estimate_refunds_the_tpm_bucket() -> None:
    s, job = two_token_tasks()

    s.finished("A", [ok("t0", 1, **{signals.TOTAL_TOKENS: "100"})], 0.125)

    assert assigned_ids(s.take()) == ["t1"]  # 112 + 128 refilled + 300 refunded >= 400
    assert events_of(job, "t1")[1].time == 0.125
    tokens = gate(s).tokens
    assert tokens is not None and tokens.available(0.125) == 112.0
    assert gate(s).stats.tokens == 100.0
    assert_event_log_sound(job)


def test_reported_usage_above_the_estimate_is_a_debt_that_delays_the_next_task() -> None:
    s, job = two_token_tasks()

    s.finished("A", [ok("t0", 1, **{signals.TOTAL_TOKENS: "1000"})], 0.125)

    run_timers(s, 0.8671875 - 1e-6)
    assert assigned_ids(s.take()) == []  # 240 - 600 = -360: 760 more needed at 1024/s
    run_timers(s, 0.8671875)
    assert assigned_ids(s.take()) == ["t1"]
    assert events_of(job, "t1")[1].time == 0.8671875
    assert_event_log_sound(job)


def test_reported_usage_updates_the_token_mean_charged_to_tasks_without_an_estimate() -> None:
    s = limited({KEY: KeyLimits(tpm=600_000, adaptive=False, default_tokens=1000.0)})
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(1, KEY), 0.0)
    assert job.tasks["t0"].rate_hold == [(KEY, 1000.0)]

    s.finished("A", [ok("t0", 1, **{signals.TOTAL_TOKENS: "500"})], 1.0)
    later = s.submit("j2", "", specs(1, KEY), 2.0)

    assert gate(s).token_mean == 950.0
    assert later.tasks["t0"].rate_hold == [(KEY, 950.0)]
    assert_event_log_sound(job)


# ----------------------------------------------------------------- learning the rate


def test_a_stated_request_limit_lowers_the_pace_of_an_adaptive_key() -> None:
    s = limited({KEY: KeyLimits(rpm=600, safety=1.0)})  # 10/s, 5 deep
    s.agent_joined("A", ["llm"], 100, 0.0)
    first = s.submit(JOB, "", specs(5, KEY), 0.0)
    assert len(assigned_ids(s.take())) == 5

    s.finished("A", [ok("t0", 1, **status("200", **{signals.LIMIT_REQUESTS: "120"}))], 0.0)
    job = s.submit("j2", "", specs(5, KEY), 0.0)
    run_timers(s, 3.0)

    assert admission_times(job) == [0.5, 1.0, 1.5, 2.0, 2.5]  # 2/s, not 10/s
    assert_event_log_sound(first)
    assert_event_log_sound(job)


def serve(s: Scheduler, job: Job, until: float, *, answer_429_at: float = float("inf")) -> float:
    """Run agent A as a provider that answers at once: 200, except one 429 (no Retry-After)
    for the first attempt dispatched at or after ``answer_429_at``. Returns when it was sent."""
    now, sent_429 = 0.0, float("nan")
    while now <= until:
        results = []
        for task in s.take().assignments.get("A", []):
            if now >= answer_429_at and sent_429 != sent_429:
                sent_429 = now
                results.append(rate_limited(task.id, task.attempt, job_id=job.id))
            else:
                results.append(ok(task.id, task.attempt, job.id, **status("200")))
        if results:
            s.finished("A", results, now)
        when = s.next_timer()
        if when is None or when > until:
            break
        assert when > now or when == 0.0 or results, f"no progress at {now!r}"
        s.tick(when)
        now = when
    return sent_429


def test_an_unknown_key_starts_at_initial_rps_and_doubles_each_second_under_pressure() -> None:
    s = limited(default=KeyLimits(safety=1.0, initial_rps=4.0))  # 4/s, 2 deep
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(400, "search/new"), 0.0)
    learner = gate(s, "search/new").learner
    assert learner is not None

    rates = []
    for second in range(5):
        serve(s, job, second + 0.99)
        rates.append(learner.rate)

    assert rates == [4.0, 8.0, 16.0, 32.0, 64.0]
    times = admission_times(job)
    assert [sum(t < second for t in times) for second in (0.01, 1, 2, 3, 4)] == [2, 5, 13, 29, 61]
    assert_event_log_sound(job)


def test_a_learned_rate_backs_off_on_a_429_from_the_observed_rate_then_climbs_back() -> None:
    s = limited(default=KeyLimits(safety=1.0, initial_rps=4.0))
    s.agent_joined("A", ["llm"], 100, 0.0)
    job = s.submit(JOB, "", specs(400, "search/new"), 0.0)
    g = gate(s, "search/new")
    assert g.learner is not None

    at = serve(s, job, 4.5, answer_429_at=4.5)

    assert at == 4.5
    admitted = g.stats.admitted  # all within the last five seconds
    assert admitted == 94
    assert g.learner.rate == pytest.approx(admitted / 5.0 * 0.7)  # 13.16 < 64
    assert g.paused_until == 4.5 + DEFAULT_PAUSE_S
    assert not g.learner.slow_start

    serve(s, job, 5.5)
    times = admission_times(job)
    assert [t for t in times if 4.5 < t < 5.5] == []
    assert g.learner.rate == pytest.approx(13.16 + (g.learner.last_bad - 13.16) / 2)
    assert min(t for t in times if t > 4.5) == 5.5
