"""KeyGate and RateLimiter: enforcing each key's limits on tasks, and learning from signals.

Tasks are built directly (no scheduler) and moved by the limiter alone; time is a float."""

from __future__ import annotations

import math

import pytest

from deerflow_common import signals
from deerflow_controller.core.model import Job, Task, TaskSpec, TaskState
from deerflow_controller.ratelimit import KeyGate, KeyLimits, LimiterConfig, RateLimiter
from deerflow_controller.ratelimit.limiter import DEFAULT_PAUSE_S

JOB = Job(id="j", name="", submitted_at=0.0)

ONE_PER_SECOND = KeyLimits(rpm=60, safety=1.0, burst_s=1.0, adaptive=False)
"""Exactly one request a second, one deep: admission times are whole seconds."""


# ----------------------------------------------------------------- helpers


def task(
    task_id: str,
    *rate_keys: str,
    tenant: str = "",
    priority: int = 0,
    est_tokens: float = 0.0,
) -> Task:
    spec = TaskSpec(
        id=task_id,
        handler="llm",
        rate_keys=rate_keys or ("k",),
        tenant=tenant,
        priority=priority,
        est_tokens=est_tokens,
    )
    return Task(job=JOB, spec=spec, timeout_s=60.0, max_retries=3)


def limiter(**limits: KeyLimits) -> RateLimiter:
    return RateLimiter(LimiterConfig(tuple(limits.items())))


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def admit_in_whole_seconds(lim: RateLimiter, seconds: int) -> list[str]:
    """Release at t = 1, 2, ... and end each admitted attempt at once: the admission order."""
    order: list[str] = []
    for now in range(1, seconds + 1):
        for t in lim.release(float(now)):
            order.append(t.id)
            lim.end_attempt(t)
    return order


def metadata(**values: str) -> dict[str, str]:
    names = {
        "status": signals.HTTP_STATUS,
        "retry_after": signals.RETRY_AFTER_S,
        "limit": signals.LIMIT_REQUESTS,
        "remaining": signals.REMAINING_REQUESTS,
        "reset": signals.RESET_REQUESTS_S,
        "tokens": signals.TOTAL_TOKENS,
    }
    return {names[k]: v for k, v in values.items()}


# ----------------------------------------------------------------- a key's limits


def test_a_key_with_a_published_rpm_paces_at_it_times_safety_half_a_second_deep() -> None:
    gate = KeyGate("k", KeyLimits(rpm=600), now=0.0)

    assert gate.request_rate() == pytest.approx(9.8)
    assert gate.requests is not None
    assert gate.requests.capacity == pytest.approx(4.9)
    assert gate.requests.available(0.0) == pytest.approx(4.9)
    assert gate.learner is not None and gate.learner.ceiling == 10.0


def test_a_key_with_a_configured_rate_starts_its_concurrency_wide_open() -> None:
    for limits in (KeyLimits(rpm=600), KeyLimits(tpm=60_000), KeyLimits(rpm=6, max_concurrency=50)):
        gate = KeyGate("k", limits, now=0.0)
        assert gate.concurrency is not None
        assert gate.concurrency.limit == gate.concurrency.max_limit == limits.max_concurrency


def test_an_unknown_key_starts_at_the_initial_rate_with_adaptive_concurrency() -> None:
    gate = KeyGate("k", KeyLimits(), now=0.0)

    assert gate.learner is not None and gate.learner.rate == 5.0
    assert gate.learner.ceiling == math.inf
    assert gate.request_rate() == pytest.approx(4.9)
    assert gate.requests is not None and gate.requests.capacity == pytest.approx(2.45)
    assert gate.concurrency is not None and gate.concurrency.value == 8
    assert gate.concurrency.limit == 8.0 and gate.concurrency.max_limit == 1024.0


def test_a_slow_key_still_lets_one_request_through_at_once() -> None:
    gate = KeyGate("k", KeyLimits(rpm=6, adaptive=False), now=0.0)  # 0.098/s

    assert gate.requests is not None and gate.requests.capacity == 1.0
    assert gate.has_room(1.0, 0.0)


def test_a_non_adaptive_key_without_limits_is_never_full() -> None:
    gate = KeyGate("k", KeyLimits(adaptive=False), now=0.0)

    assert gate.requests is None and gate.tokens is None
    assert gate.concurrency is None and gate.slope is None
    for _ in range(1000):
        assert gate.has_room(1e6, 0.0)
        gate.charge(1e6, 0.0)
    assert gate.ready_at(1e6, 0.0) == 0.0


def test_a_configured_concurrency_is_a_fixed_ceiling_of_the_aimd_limit() -> None:
    gate = KeyGate("k", KeyLimits(concurrency=2, adaptive=False), now=0.0)

    assert gate.concurrency is not None
    assert (gate.concurrency.limit, gate.concurrency.max_limit) == (2.0, 2.0)
    gate.charge(1.0, 0.0)
    gate.charge(1.0, 0.0)
    assert not gate.has_room(1.0, 100.0)
    assert gate.ready_at(1.0, 100.0) == math.inf


def test_the_token_bucket_paces_tpm_times_safety_half_a_second_deep() -> None:
    gate = KeyGate("k", KeyLimits(tpm=60_000, adaptive=False), now=0.0)

    assert gate.tokens is not None
    assert gate.tokens.rate == pytest.approx(980.0)
    assert gate.tokens.capacity == pytest.approx(490.0)
    gate.charge(400.0, 0.0)
    assert not gate.has_room(400.0, 0.0)
    assert gate.ready_at(400.0, 0.0) == pytest.approx(310.0 / 980.0)


def test_tasks_without_an_estimate_are_charged_the_keys_default_tokens() -> None:
    gate = KeyGate("k", KeyLimits(default_tokens=750.0), now=0.0)

    assert gate.tokens_for(task("a")) == 750.0
    assert gate.tokens_for(task("b", est_tokens=30.0)) == 30.0


# ----------------------------------------------------------------- admission


def test_release_admits_the_buckets_depth_at_once_and_charges_each_task() -> None:
    lim = limiter(k=KeyLimits(rpm=600, adaptive=False))
    tasks = [task(f"t{i}") for i in range(10)]
    for t in tasks:
        lim.offer(t, 0.0)

    admitted = lim.release(0.0)

    assert ids(admitted) == ["t0", "t1", "t2", "t3"]
    assert [t.rate_hold for t in admitted] == [[("k", 1000.0)]] * 4
    assert all(t.state == TaskState.THROTTLED for t in tasks)  # the caller queues them
    gate = lim.gates["k"]
    assert (gate.in_flight, gate.stats.admitted, gate.waiting, lim.waiting) == (4, 4, 6, 6)
    assert lim.next_release(0.0) == pytest.approx(0.1 / 9.8)
    assert lim.release(0.01) == []
    assert ids(lim.release(0.0103)) == ["t4"]


def test_an_offer_creates_a_gate_for_every_key_of_the_task() -> None:
    lim = limiter()

    lim.offer(task("a", "x", "y", "z"), 3.0)

    assert sorted(lim.gates) == ["x", "y", "z"]
    assert lim.waiting == 1
    assert lim.gates["x"].waiting == 1


def test_nothing_is_released_and_nothing_is_due_when_nothing_waits() -> None:
    lim = limiter(k=ONE_PER_SECOND)

    assert lim.release(0.0) == []
    assert lim.next_release(0.0) is None


def test_a_task_with_two_keys_waits_until_both_have_room() -> None:
    lim = limiter(
        a=ONE_PER_SECOND,
        b=KeyLimits(rpm=30, safety=1.0, burst_s=2.0, adaptive=False),  # 0.5/s, one deep
    )
    x, y = task("x", "a", "b"), task("y", "a", "b")
    lim.offer(x, 0.0)
    lim.offer(y, 0.0)

    assert ids(lim.release(0.0)) == ["x"]
    assert x.rate_hold == [("a", 1000.0), ("b", 1000.0)]
    assert lim.next_release(0.0) == 2.0  # a is ready at 1, b at 2
    assert lim.release(1.0) == []
    assert ids(lim.release(2.0)) == ["y"]
    assert (lim.gates["a"].stats.admitted, lim.gates["b"].stats.admitted) == (2, 2)


def test_a_task_waiting_on_another_keys_concurrency_is_not_due_by_time_alone() -> None:
    lim = limiter(a=KeyLimits(adaptive=False), b=KeyLimits(concurrency=1, adaptive=False))
    x, y = task("x", "a", "b"), task("y", "a", "b")
    lim.offer(x, 0.0)
    lim.offer(y, 0.0)

    assert ids(lim.release(0.0)) == ["x"]
    assert lim.next_release(0.0) is None
    assert lim.release(50.0) == []
    lim.end_attempt(x)
    assert ids(lim.release(50.0)) == ["y"]


def test_tenants_waiting_on_one_key_are_served_in_turn() -> None:
    lim = limiter(k=ONE_PER_SECOND)
    for i in range(5):
        lim.offer(task(f"a{i}", tenant="A"), 0.0)
    for i in range(3):
        lim.offer(task(f"b{i}", tenant="B"), 0.0)

    order = ids(lim.release(0.0)) + admit_in_whole_seconds(lim, 7)

    assert order == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "a4"]


def test_within_a_tenant_higher_priority_goes_first_then_arrival() -> None:
    lim = limiter(k=ONE_PER_SECOND)
    for name, priority in [("low", 1), ("mid", 3), ("high", 5), ("mid2", 3), ("none", 0)]:
        lim.offer(task(name, priority=priority), 0.0)

    order = ids(lim.release(0.0)) + admit_in_whole_seconds(lim, 4)

    assert order == ["high", "mid", "mid2", "low", "none"]


def test_a_task_that_left_the_throttled_state_is_skipped_and_not_counted() -> None:
    lim = limiter(k=ONE_PER_SECOND)
    tasks = [task(f"t{i}") for i in range(4)]
    for t in tasks:
        lim.offer(t, 0.0)
    assert ids(lim.release(0.0)) == ["t0"]

    lim.discard(tasks[1])  # the scheduler's contract: discard, then leave THROTTLED
    tasks[1].state = TaskState.CANCELLED
    assert lim.gates["k"].waiting == 2

    assert ids(lim.release(1.0)) == ["t2"]
    assert lim.gates["k"].waiting == 1


def test_end_attempt_gives_each_slot_back_exactly_once() -> None:
    lim = limiter(k=KeyLimits(concurrency=5, adaptive=False), j=KeyLimits(adaptive=False))
    first, second = task("a", "k", "j"), task("b", "k")
    lim.offer(first, 0.0)
    lim.offer(second, 0.0)
    assert ids(lim.release(0.0)) == ["a", "b"]
    assert (lim.gates["k"].in_flight, lim.gates["j"].in_flight) == (2, 1)

    lim.end_attempt(first)
    lim.end_attempt(first)

    assert first.rate_hold is None
    assert (lim.gates["k"].in_flight, lim.gates["j"].in_flight) == (1, 0)
    lim.end_attempt(second)
    assert lim.gates["k"].in_flight == 0


# ----------------------------------------------------------------- learning from signals


def test_scarce_agent_room_goes_to_the_most_urgent_task_whichever_key_it_waits_on() -> None:
    """Two keys with room, one agent slot: the high-priority task on the key used second goes
    before the low-priority one on the key used first; then the next best."""
    wide = KeyLimits(rpm=6000, adaptive=False)
    lim = limiter(search=wide, llm=wide)
    early, late = task("early", "search"), task("late", "llm", priority=5)
    second = task("second", "search")
    for t in (early, late, second):
        lim.offer(t, 0.0)

    assert ids(lim.release(0.0, limit=1)) == ["late"]
    assert ids(lim.release(0.0, limit=1)) == ["early"]
    assert ids(lim.release(0.0)) == ["second"]


def test_under_a_limit_a_full_key_does_not_hold_up_the_other_keys_lines() -> None:
    lim = limiter(full=KeyLimits(rpm=60, safety=1.0, burst_s=1.0, adaptive=False), free=KeyLimits())
    lim.offer(task("first", "full"), 0.0)
    assert ids(lim.release(0.0, limit=5)) == ["first"]
    blocked, other = task("blocked", "full", priority=9), task("other", "free")
    lim.offer(blocked, 0.0)
    lim.offer(other, 0.0)

    assert ids(lim.release(0.5, limit=5)) == ["other"]
    assert blocked.state == TaskState.THROTTLED


def admitted_one(lim: RateLimiter, now: float = 0.0, *, est_tokens: float = 0.0) -> Task:
    t = task("probe", est_tokens=est_tokens)
    lim.offer(t, now)
    assert lim.release(now) == [t]
    return t


def test_a_429_with_retry_after_pauses_the_key_until_then() -> None:
    lim = limiter(k=KeyLimits(adaptive=False))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="429", retry_after="2.5"), 10.0)

    gate = lim.gates["k"]
    assert gate.paused_until == 12.5
    assert gate.stats.rate_limited == 1
    assert not gate.has_room(1.0, 12.4999)
    assert gate.ready_at(1.0, 10.0) == 12.5
    assert gate.has_room(1.0, 12.5)


def test_a_429_without_retry_after_pauses_the_key_for_the_default_pause() -> None:
    lim = limiter(k=KeyLimits(adaptive=False))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="429"), 10.0)

    assert lim.gates["k"].paused_until == 10.0 + DEFAULT_PAUSE_S
    assert DEFAULT_PAUSE_S == 1.0


def test_a_shorter_later_retry_after_does_not_cut_a_pause_short() -> None:
    lim = limiter(k=KeyLimits(adaptive=False))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="429", retry_after="30"), 10.0)
    lim.observe(t, metadata(status="429", retry_after="1"), 11.0)

    assert lim.gates["k"].paused_until == 40.0


def test_a_429_shrinks_the_adaptive_concurrency_and_a_success_grows_it() -> None:
    lim = limiter(k=KeyLimits())  # starts at initial_concurrency, 8
    t = admitted_one(lim)
    aimd = lim.gates["k"].concurrency
    assert aimd is not None

    lim.observe(t, metadata(status="200"), 1.0)
    assert aimd.limit == 8.125
    lim.observe(t, metadata(status="429"), 2.0)
    assert aimd.limit == pytest.approx(6.5)
    assert aimd.value == 6


def test_a_429_on_a_learned_key_backs_off_from_what_was_admitted_recently() -> None:
    lim = limiter(k=KeyLimits(rpm=6000, concurrency=1000))  # 100/s ceiling
    gate = lim.gate("k", 0.0)
    tasks = [task(f"t{i}") for i in range(30)]
    for t in tasks:
        lim.offer(t, 0.0)
    assert len(lim.release(0.0)) == 30  # 49 deep

    lim.observe(tasks[0], metadata(status="429", retry_after="0"), 4.0)

    assert gate.learner is not None
    assert gate.learner.rate == pytest.approx(30 / 5.0 * 0.7)
    assert gate.request_rate() == pytest.approx(4.2 * 0.98)
    assert gate.requests is not None
    assert gate.requests.capacity == pytest.approx(4.2 * 0.98 * 0.5)


def test_reported_usage_below_the_estimate_is_refunded_to_the_token_bucket() -> None:
    lim = limiter(k=KeyLimits(tpm=60_000, adaptive=False))  # 980/s, 490 deep
    t = admitted_one(lim, est_tokens=400.0)
    assert t.rate_hold == [("k", 400.0)]

    lim.observe(t, metadata(status="200", tokens="100"), 0.1)

    tokens = lim.gates["k"].tokens
    assert tokens is not None
    assert tokens.available(0.1) == pytest.approx(90.0 + 98.0 + 300.0)
    assert lim.gates["k"].stats.tokens == 100.0


def test_reported_usage_above_the_estimate_becomes_a_debt() -> None:
    lim = limiter(k=KeyLimits(tpm=60_000, adaptive=False))
    t = admitted_one(lim, est_tokens=400.0)

    lim.observe(t, metadata(status="200", tokens="1000"), 0.1)

    gate = lim.gates["k"]
    assert gate.tokens is not None
    assert gate.tokens.available(0.1) == pytest.approx(90.0 + 98.0 - 600.0)
    assert gate.ready_at(400.0, 0.1) == pytest.approx(0.1 + 812.0 / 980.0)


def test_reported_usage_moves_the_learned_token_mean() -> None:
    lim = limiter(k=KeyLimits(tpm=600_000, adaptive=False, default_tokens=1000.0))
    t = admitted_one(lim)

    lim.observe(t, metadata(tokens="500"), 1.0)
    assert lim.gates["k"].token_mean == 950.0
    lim.observe(t, metadata(tokens="2950"), 2.0)
    assert lim.gates["k"].token_mean == 1150.0

    later = task("later")
    lim.offer(later, 3.0)
    assert lim.release(3.0) == [later]
    assert later.rate_hold == [("k", 1150.0)]


def test_a_stated_request_limit_lowers_the_pace_of_an_adaptive_key() -> None:
    lim = limiter(k=KeyLimits(rpm=600))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="200", limit="120"), 0.0)

    gate = lim.gates["k"]
    assert gate.request_rate() == pytest.approx(1.96)
    assert gate.requests is not None
    assert gate.requests.capacity == 1.0
    assert gate.requests.available(0.0) == 1.0


def test_a_stated_request_limit_never_raises_the_pace_above_the_configured_rpm() -> None:
    lim = limiter(k=KeyLimits(rpm=600))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="200", limit="1200"), 0.0)

    assert lim.gates["k"].request_rate() == pytest.approx(9.8)


def test_a_non_adaptive_key_ignores_stated_limits() -> None:
    lim = limiter(k=KeyLimits(rpm=600, adaptive=False))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="200", limit="60"), 0.0)

    assert lim.gates["k"].request_rate() == pytest.approx(9.8)


def test_a_429_does_not_lower_a_stated_limit() -> None:
    lim = limiter(k=KeyLimits(rpm=600))
    t = admitted_one(lim)
    lim.observe(t, metadata(status="200", limit="300"), 0.0)

    lim.observe(t, metadata(status="429", retry_after="1"), 1.0)

    assert lim.gates["k"].request_rate() == pytest.approx(4.9)


def test_no_remaining_requests_pauses_an_adaptive_key_until_one_request_is_back() -> None:
    """The reset is when the provider's bucket is full again; it has room for the next request
    after one request's share of the limit: 60 / the stated per-minute limit."""
    lim = limiter(k=KeyLimits(rpm=600))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="200", limit="900", remaining="0", reset="1"), 5.0)

    assert lim.gates["k"].paused_until == pytest.approx(5.0 + 60 / 900)
    assert lim.gates["k"].stats.emptied == 1


def test_no_remaining_requests_without_a_stated_limit_pause_for_one_paced_request() -> None:
    lim = limiter(k=KeyLimits(rpm=600))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="200", remaining="0", reset="3"), 5.0)

    assert lim.gates["k"].paused_until == pytest.approx(5.0 + 1 / 9.8)  # 600 rpm x 0.98


def test_a_reset_shorter_than_one_request_is_the_pause() -> None:
    lim = limiter(k=KeyLimits(rpm=600))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="200", limit="60", remaining="0", reset="0.25"), 5.0)

    assert lim.gates["k"].paused_until == 5.25


def test_remaining_requests_do_not_pause_the_key() -> None:
    lim = limiter(k=KeyLimits(rpm=600))
    t = admitted_one(lim)

    lim.observe(t, metadata(status="200", remaining="1", reset="3"), 5.0)

    assert lim.gates["k"].paused_until == 0.0


def test_slow_start_does_not_depend_on_the_clocks_origin() -> None:
    """The same demand on a new unknown key, started at t=0 and at t=1000 (a monotonic clock
    is rarely near zero), must learn the same rates at the same offsets."""

    def learned_rates(start: float) -> list[float]:
        lim = RateLimiter(LimiterConfig(default=KeyLimits(safety=1.0, initial_rps=4.0)))
        for i in range(100):
            lim.offer(task(f"t{i}", "new"), start)
        rates = []
        for offset in (0.0, 0.5, 1.0, 1.5, 2.0):
            for t in lim.release(start + offset):
                lim.end_attempt(t)
            learner = lim.gates["new"].learner
            assert learner is not None
            rates.append(learner.rate)
        return rates

    assert learned_rates(0.0) == [4.0, 4.0, 8.0, 8.0, 16.0]
    assert learned_rates(1000.0) == learned_rates(0.0)


# ----------------------------------------------------------------- burst slope


def admitted_per_window(limits: KeyLimits, windows: int) -> list[int]:
    """Demand without end, tried every 10 ms: admissions in each one-second window."""
    gate = KeyGate("k", limits, now=0.0)
    counts = [0] * windows
    for step in range(windows * 100):
        now = step / 100
        while gate.has_room(1.0, now):
            gate.charge(1.0, now)
            counts[step // 100] += 1
    return counts


def test_a_burst_slope_holds_a_ramp_within_the_providers_rule() -> None:
    limits = KeyLimits(rpm=60_000, burst_slope=0.5, burst_floor_rps=10.0, adaptive=False)
    gate = KeyGate("k", limits, now=0.0)
    stamps: list[float] = []
    for step in range(500):
        now = step / 100
        while gate.has_room(1.0, now):
            gate.charge(1.0, now)
            stamps.append(now)
            recent = sum(1 for s in stamps if now - 1 < s <= now)
            previous = sum(1 for s in stamps if now - 2 < s <= now - 1)
            assert recent <= max(10.0, 1.5 * previous), f"over the slope at {now}"

    assert admitted_per_window(limits, 5)[0] == 10


def test_a_key_with_a_burst_slope_ramps_up_from_the_floor_under_sustained_demand() -> None:
    """Ark limits how fast the rate rises, not the rate: with +50 % a second allowed and a
    100/s budget, ten seconds of demand must climb above the 2/s floor."""
    limits = KeyLimits(rpm=6000, burst_slope=0.5, adaptive=False)  # floor 2/s, 1 s windows

    counts = admitted_per_window(limits, 10)

    assert counts[0] >= 1
    assert counts[-1] > 2, f"admissions per window: {counts}"


@pytest.mark.parametrize("code", ["limit_burst_rate", "Throttling.BurstRate", "LIMIT_BURST_RATE"])
def test_a_burst_rate_refusal_in_any_providers_spelling_is_not_counted_in_the_slope(
    code: str,
) -> None:
    lim = limiter(k=KeyLimits(rpm=60_000, burst_slope=0.5, burst_floor_rps=10.0, adaptive=False))
    t = task("t")
    lim.offer(t, 0.0)
    assert ids(lim.release(0.0)) == ["t"]
    slope = lim.gates["k"].slope
    assert slope is not None and len(slope.stamps) == 1

    metadata = {signals.HTTP_STATUS: "429", signals.ERROR_CODE: code}
    lim.observe(t, metadata, 0.1)

    assert len(slope.stamps) == 0  # the provider did not count the refused request
