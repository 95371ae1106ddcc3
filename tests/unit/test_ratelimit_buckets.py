"""TokenBucket and SlopeWindow: the enforcement primitives, driven with a float clock."""

from __future__ import annotations

import collections
import math

import pytest

from deerflow_controller.ratelimit import SlopeWindow, TokenBucket

# ----------------------------------------------------------------- TokenBucket


def test_a_new_bucket_starts_full() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=10.0)

    assert bucket.available(10.0) == 4.0
    assert bucket.can_take(4.0, 10.0)
    bucket.take(0.5, 10.0)
    assert not bucket.can_take(4.0, 10.0)


def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=10.0)
    bucket.take(4.0, 10.0)

    assert bucket.available(10.0) == 0.0
    assert bucket.available(10.5) == 1.0
    assert bucket.available(11.25) == 2.5
    assert bucket.available(12.0) == 4.0
    assert bucket.available(100.0) == 4.0


def test_an_earlier_time_neither_refills_nor_drains_the_bucket() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=10.0)
    bucket.take(3.0, 10.0)

    assert bucket.available(9.0) == 1.0
    assert bucket.available(10.5) == 2.0


def test_ready_at_is_now_when_the_amount_fits() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=10.0)
    bucket.take(2.0, 10.0)

    assert bucket.ready_at(2.0, 10.0) == 10.0
    assert bucket.ready_at(1.0, 10.0) == 10.0


def test_ready_at_is_when_the_refill_covers_the_shortfall() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=10.0)
    bucket.take(3.5, 10.0)  # 0.5 left

    assert bucket.ready_at(1.0, 10.0) == 10.25
    assert bucket.ready_at(2.0, 10.0) == 10.75
    assert not bucket.can_take(2.0, 10.7)
    assert bucket.can_take(2.0, 10.75)


def test_a_bucket_is_ready_at_the_time_ready_at_reports() -> None:
    # 600 rpm paced at 98 %: 9.8 per second, half a second deep. Taking one at each reported
    # ready time must always succeed, or a caller that sleeps until ready_at spins for ever.
    bucket = TokenBucket(rate=9.8, capacity=4.9, now=0.0)
    now = 0.0
    while bucket.can_take(1.0, now):
        bucket.take(1.0, now)
    for i in range(200):
        now = bucket.ready_at(1.0, now)
        assert bucket.can_take(1.0, now), (
            f"take #{i + 1}: ready_at said {now!r} but the level there is "
            f"{bucket.available(now)!r}, and ready_at then says {bucket.ready_at(1.0, now)!r}"
        )
        bucket.take(1.0, now)


def test_a_refund_never_lifts_the_level_above_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    bucket.take(1.0, 0.0)

    bucket.give_back(10.0, 0.0)

    assert bucket.available(0.0) == 4.0


def test_a_debt_from_a_negative_give_back_delays_later_takes() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    bucket.take(1.0, 0.0)

    bucket.give_back(-5.0, 0.0)  # used 5 more than estimated

    assert bucket.available(0.0) == -2.0
    assert bucket.ready_at(1.0, 0.0) == 1.5
    assert not bucket.can_take(1.0, 1.0)
    assert bucket.can_take(1.0, 1.5)


def test_an_amount_above_capacity_fits_a_full_bucket_and_leaves_a_debt() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)

    assert bucket.can_take(10.0, 0.0)
    bucket.take(10.0, 0.0)

    assert bucket.available(0.0) == -6.0
    assert bucket.ready_at(1.0, 0.0) == 3.5
    assert bucket.ready_at(10.0, 0.0) == 5.0  # a full bucket again, not ten tokens


def test_an_oversized_amount_waits_only_for_a_full_bucket() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    bucket.take(1.0, 0.0)

    assert not bucket.can_take(100.0, 0.0)
    assert bucket.ready_at(100.0, 0.0) == 0.5
    assert bucket.can_take(100.0, 0.5)


def test_a_bucket_with_a_zero_rate_is_never_ready_once_empty() -> None:
    bucket = TokenBucket(rate=0.0, capacity=1.0, now=0.0)
    bucket.take(1.0, 0.0)

    assert bucket.ready_at(1.0, 0.0) == math.inf
    assert bucket.available(1e9) == 0.0


def test_set_rate_keeps_the_level_but_caps_it_at_the_new_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    bucket.take(1.0, 0.0)  # 3 left

    bucket.set_rate(8.0, 16.0, 0.5)  # refilled to 4 at the old rate first
    assert bucket.available(0.5) == 4.0
    assert bucket.available(1.0) == 8.0

    bucket.set_rate(1.0, 2.0, 1.0)
    assert bucket.available(1.0) == 2.0
    bucket.take(2.0, 1.0)
    assert bucket.ready_at(1.0, 1.0) == 2.0


# ----------------------------------------------------------------- SlopeWindow


def provider_allows(stamps: list[float], t: float, slope: float, floor: float, w: float) -> bool:
    """Ark's rule as the simulator applies it, over sliding windows, for an arrival at t."""
    recent = sum(1 for s in stamps if t - w < s <= t)
    previous = sum(1 for s in stamps if t - 2 * w < s <= t - w)
    return recent <= max(floor * w, (1 + slope) * previous)


def test_a_quiet_key_may_send_the_floor_within_one_window() -> None:
    window = SlopeWindow(slope=0.5, floor_rps=2.0, window_s=1.0, now=0.0)
    window.take(0.0)
    window.take(0.0)

    assert not window.can_take(0.5)
    assert window.ready_at(0.5) == 1.0


def test_windows_slide_so_a_burst_just_before_a_boundary_still_counts_after_it() -> None:
    window = SlopeWindow(slope=0.5, floor_rps=2.0, window_s=1.0, now=0.0)
    window.take(0.9)
    window.take(0.9)

    # A fixed window starting at 1.0 would allow two more; the provider's sliding one does not.
    assert not window.can_take(1.0)
    assert window.ready_at(1.0) == 1.9


def test_growth_is_at_least_one_request_once_slope_times_previous_reaches_one() -> None:
    window = SlopeWindow(slope=0.5, floor_rps=2.0, window_s=1.0, now=0.0, safety=0.9)
    window.take(0.0)
    window.take(0.0)

    # previous = 2: 0.5 * 2 * 0.9 = 0.9 rounds down to 0, but growth is at least 1.
    assert window.allowance(1.0) == 3


def test_growth_is_the_slope_times_safety_rounded_down_for_larger_counts() -> None:
    window = SlopeWindow(slope=0.5, floor_rps=2.0, window_s=1.0, now=0.0, safety=0.9)
    for _ in range(20):
        window.take(0.0)

    assert window.allowance(1.0) == 20 + 9  # floor(0.5 * 20 * 0.9)


@pytest.mark.parametrize("previous", range(0, 200, 7))
def test_the_allowance_never_exceeds_the_providers_rule(previous: int) -> None:
    window = SlopeWindow(slope=0.5, floor_rps=2.0, window_s=1.0, now=0.0, safety=0.98)
    for _ in range(previous):
        window.take(0.0)

    assert window.allowance(1.0) <= max(2.0, 1.5 * previous)


def test_an_idle_spell_of_two_windows_forgets_every_admission() -> None:
    window = SlopeWindow(slope=1.0, floor_rps=1.0, window_s=1.0, now=0.0, safety=1.0)
    for _ in range(8):
        window.take(0.0)

    assert window.allowance(2.0) == 1.0
    assert window.stamps == collections.deque()


def test_sustained_demand_climbs_from_the_floor_and_never_breaks_the_providers_rule() -> None:
    slope, floor, w = 0.5, 2.0, 1.0
    window = SlopeWindow(slope=slope, floor_rps=floor, window_s=w, now=0.0, safety=0.9)
    stamps: list[float] = []
    for step in range(1000):  # demand tried every 10 ms for 10 s
        now = step / 100
        while window.can_take(now):
            window.take(now)
            stamps.append(now)
            assert provider_allows(stamps, now, slope, floor, w), f"429 at {now}"
    per_second = [sum(1 for s in stamps if k <= s < k + 1) for k in range(10)]
    assert per_second[0] == 2
    assert per_second[-1] > 10 * per_second[0], per_second


@pytest.mark.parametrize("now", [0.0, 0.999])
def test_a_window_with_room_is_ready_now(now: float) -> None:
    window = SlopeWindow(slope=0.5, floor_rps=3.0, window_s=1.0, now=0.0, safety=1.0)

    assert window.ready_at(now) == now
