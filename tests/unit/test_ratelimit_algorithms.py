"""AimdConcurrency and RateLearner: how a key's limits adapt, each checked against its formula."""

from __future__ import annotations

import math

import pytest

from deerflow_controller.ratelimit import AimdConcurrency, RateLearner

# ----------------------------------------------------------------- AimdConcurrency


def test_each_success_adds_one_over_the_current_limit() -> None:
    aimd = AimdConcurrency(limit=2.0)

    aimd.on_success()
    assert aimd.limit == 2.5
    aimd.on_success()
    assert aimd.limit == 2.9
    assert aimd.value == 2
    aimd.on_success()
    assert aimd.limit == pytest.approx(2.9 + 1 / 2.9)
    assert aimd.value == 3


def test_an_overload_multiplies_the_limit_by_the_backoff() -> None:
    aimd = AimdConcurrency(limit=10.0)

    aimd.on_overload()
    assert aimd.limit == 8.0
    aimd.on_overload()
    assert aimd.limit == pytest.approx(6.4)
    assert aimd.value == 6


def test_a_custom_backoff_is_used_on_overload() -> None:
    aimd = AimdConcurrency(limit=10.0, backoff=0.5)

    aimd.on_overload()

    assert aimd.limit == 5.0


def test_successes_never_raise_the_limit_above_max_limit() -> None:
    aimd = AimdConcurrency(limit=3.9, max_limit=4.0)

    aimd.on_success()
    assert aimd.limit == 4.0
    aimd.on_success()
    assert aimd.limit == 4.0
    assert aimd.value == 4


def test_overloads_never_lower_the_limit_below_min_limit() -> None:
    aimd = AimdConcurrency(limit=1.1, min_limit=1.0)

    aimd.on_overload()
    assert aimd.limit == 1.0
    aimd.on_overload()
    assert aimd.limit == 1.0


def test_the_enforced_value_is_the_whole_limit_and_at_least_one() -> None:
    assert AimdConcurrency(limit=7.99).value == 7
    assert AimdConcurrency(limit=0.5, min_limit=0.1).value == 1


# ----------------------------------------------------------------- RateLearner


def test_a_stated_per_minute_limit_is_believed_as_requests_per_second() -> None:
    learner = RateLearner(rate=5.0, ceiling=math.inf)

    assert learner.on_stated_limit(120.0) is True
    assert learner.rate == 2.0
    assert learner.stated
    assert learner.on_stated_limit(120.0) is False
    assert learner.on_stated_limit(180.0) is True
    assert learner.rate == 3.0


def test_the_first_stated_limit_counts_as_a_change_even_when_it_equals_the_estimate() -> None:
    learner = RateLearner(rate=2.0, ceiling=math.inf)

    assert learner.on_stated_limit(120.0) is True
    assert learner.rate == 2.0


def test_a_stated_limit_never_raises_the_estimate_above_the_ceiling() -> None:
    learner = RateLearner(rate=10.0, ceiling=10.0)

    learner.on_stated_limit(6000.0)

    assert learner.rate == 10.0


def test_a_stated_limit_stops_growth_under_pressure() -> None:
    learner = RateLearner(rate=5.0, ceiling=math.inf)
    learner.on_stated_limit(120.0)

    learner.on_pressure(5.0)
    learner.on_pressure(10.0)

    assert learner.rate == 2.0


def test_slow_start_doubles_the_rate_once_per_second_of_pressure() -> None:
    learner = RateLearner(rate=1.0, ceiling=math.inf)

    rates = []
    for now in (0.5, 0.99, 1.0, 1.5, 1.99, 2.0, 3.2, 3.5, 4.19, 4.2):
        learner.on_pressure(now)
        rates.append(learner.rate)

    assert rates == [1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 8.0, 8.0, 8.0, 16.0]


def test_growth_never_exceeds_the_ceiling() -> None:
    learner = RateLearner(rate=2.0, ceiling=3.0)

    learner.on_pressure(1.0)
    assert learner.rate == 3.0
    learner.on_pressure(2.0)
    assert learner.rate == 3.0


def test_a_429_backs_off_from_the_observed_rate_when_it_is_below_the_estimate() -> None:
    learner = RateLearner(rate=20.0, ceiling=math.inf)

    learner.on_rate_limited(10.0, 5.0)

    assert learner.rate == 7.0


def test_a_429_backs_off_from_the_estimate_when_more_was_observed() -> None:
    learner = RateLearner(rate=8.0, ceiling=math.inf)

    learner.on_rate_limited(10.0, 5.0)

    assert learner.rate == pytest.approx(5.6)


def test_a_429_with_nothing_observed_backs_off_from_the_estimate() -> None:
    learner = RateLearner(rate=10.0, ceiling=math.inf)

    learner.on_rate_limited(0.0, 5.0)

    assert learner.rate == 7.0


def test_a_429_never_drops_the_rate_below_min_rps() -> None:
    learner = RateLearner(rate=0.25, ceiling=math.inf)

    learner.on_rate_limited(0.25, 1.0)

    assert learner.rate == 0.2


def test_after_a_429_growth_climbs_halfway_back_then_probes_slowly() -> None:
    learner = RateLearner(rate=8.0, ceiling=math.inf)
    learner.on_pressure(1.0)
    assert learner.rate == 16.0

    learner.on_rate_limited(10.0, 5.0)  # min(16, 10) * 0.7
    assert learner.rate == 7.0
    assert not learner.slow_start

    assert learner.last_bad == 16.0

    rates = []
    for now in (5.5, 6.0, 6.5, 7.0, 9.0, 10.0):
        learner.on_pressure(now)
        rates.append(learner.rate)
    # halfway back to 16 while below 95 % of it (at least +2), then +2/4 past it
    assert rates == [7.0, 11.5, 11.5, 13.75, 15.75, 16.25]
