"""The one backoff of the reconnect loops: pauses double to a cap, jitter scales them, reset."""

from __future__ import annotations

import math

import pytest

from deerflow_common.backoff import (
    CENTRED_JITTER,
    EQUAL_JITTER,
    FULL_JITTER,
    NO_JITTER,
    Backoff,
    Jitter,
)


def _pauses(backoff: Backoff, n: int) -> list[float]:
    return [backoff.delay() for _ in range(n)]


def test_pauses_double_from_the_base_and_stop_at_the_cap() -> None:
    backoff = Backoff(0.05, 0.5, jitter=NO_JITTER)

    assert _pauses(backoff, 6) == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])


@pytest.mark.parametrize(
    ("jitter", "u", "factor"),
    [
        (EQUAL_JITTER, 0.0, 0.5),
        (EQUAL_JITTER, 0.5, 0.75),
        (FULL_JITTER, 0.0, 0.0),
        (FULL_JITTER, 0.25, 0.25),
        (CENTRED_JITTER, 0.0, 0.5),
        (CENTRED_JITTER, 0.999, 1.499),
        (NO_JITTER, 0.7, 1.0),
    ],
)
def test_jitter_scales_each_pause_by_low_plus_the_random_share_of_the_range(
    jitter: Jitter, u: float, factor: float
) -> None:
    backoff = Backoff(1.0, 8.0, jitter=jitter, random=lambda: u)

    assert _pauses(backoff, 5) == pytest.approx([c * factor for c in (1, 2, 4, 8, 8)])


def test_each_pause_draws_once_from_the_random_source() -> None:
    draws = iter([0.0, 1.0, 0.5])
    backoff = Backoff(0.1, 5.0, jitter=EQUAL_JITTER, random=lambda: next(draws))

    assert _pauses(backoff, 3) == pytest.approx([0.05, 0.2, 0.3])


def test_a_reset_starts_the_pauses_from_the_base_again() -> None:
    backoff = Backoff(0.1, 5.0, jitter=NO_JITTER)
    _pauses(backoff, 4)

    backoff.reset()

    assert backoff.ceiling_s == 0.1
    assert _pauses(backoff, 2) == pytest.approx([0.1, 0.2])


def test_the_sdks_failover_pauses_stay_between_25_and_375_ms() -> None:
    low = Backoff(0.05, 0.25, jitter=CENTRED_JITTER, random=lambda: 0.0)
    high = Backoff(0.05, 0.25, jitter=CENTRED_JITTER, random=lambda: math.nextafter(1.0, 0.0))

    assert _pauses(low, 5) == pytest.approx([0.025, 0.05, 0.1, 0.125, 0.125])
    assert max(_pauses(high, 5)) <= 0.375


@pytest.mark.parametrize(
    ("base_s", "cap_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0), (math.inf, math.inf), (math.nan, 1)]
)
def test_a_base_or_cap_out_of_range_is_refused_in_one_sentence(base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base_s, cap_s)


@pytest.mark.parametrize(("low", "high"), [(-0.1, 1.0), (1.0, 0.5), (0.0, math.inf)])
def test_a_jitter_range_out_of_order_is_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="0 <= low <= high"):
        Jitter(low, high)
