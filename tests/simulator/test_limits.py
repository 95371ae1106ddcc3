"""The pure limits module, driven by explicit times."""

from __future__ import annotations

import heapq

import pytest

from deerflow_simulator import KeyLimiter, KeyLimits, Limit, Permit, Throttled, TokenBucket
from deerflow_simulator.limits import CONCURRENCY_RETRY_S


def admitted(verdict: Permit | Throttled) -> Permit:
    assert isinstance(verdict, Permit), verdict
    return verdict


def throttled(verdict: Permit | Throttled) -> Throttled:
    assert isinstance(verdict, Throttled), verdict
    return verdict


def test_the_rpm_bucket_holds_one_second_of_requests() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=120), now=0.0)
    admitted(limiter.admit(0.0))
    admitted(limiter.admit(0.0))
    refused = throttled(limiter.admit(0.0))
    assert refused.limit is Limit.RPM
    assert refused.retry_after_s == pytest.approx(0.5)


def test_the_rpm_bucket_refills_at_rpm_over_sixty_per_second() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=120), now=0.0)
    admitted(limiter.admit(0.0))
    admitted(limiter.admit(0.0))
    throttled(limiter.admit(0.49))
    admitted(limiter.admit(0.5))


def test_a_slow_rpm_still_allows_one_request_on_a_full_bucket() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=6), now=0.0)
    admitted(limiter.admit(0.0))
    assert throttled(limiter.admit(0.0)).retry_after_s == pytest.approx(10.0)


def test_throttled_requests_consume_nothing() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=60, tpm=600), now=0.0)
    admitted(limiter.admit(0.0, tokens=5))
    for t in (0.1, 0.2, 0.3, 0.4):
        throttled(limiter.admit(t, tokens=5))
    admitted(limiter.admit(1.0, tokens=5))


def test_a_request_larger_than_the_tpm_bucket_passes_on_a_full_bucket_and_leaves_debt() -> None:
    limiter = KeyLimiter(KeyLimits(tpm=600), now=0.0)  # 10 tokens a second, holds 10
    admitted(limiter.admit(0.0, tokens=130))
    refused = throttled(limiter.admit(0.0, tokens=1))
    assert refused.limit is Limit.TPM
    assert refused.retry_after_s == pytest.approx(12.1)  # from -120 back to 1
    admitted(limiter.admit(12.1, tokens=1))


def test_release_settles_the_token_charge_to_what_was_used() -> None:
    limiter = KeyLimiter(KeyLimits(tpm=6000), now=0.0)  # holds 100 tokens
    permit = admitted(limiter.admit(0.0, tokens=100))
    assert limiter.snapshot(0.0).remaining_tokens == 0
    limiter.release(permit, 0.0, tokens_used=40)
    assert limiter.snapshot(0.0).remaining_tokens == 60


def test_release_takes_tokens_used_beyond_the_charge() -> None:
    limiter = KeyLimiter(KeyLimits(tpm=6000), now=0.0)
    permit = admitted(limiter.admit(0.0, tokens=10))
    limiter.release(permit, 0.0, tokens_used=50)
    assert limiter.snapshot(0.0).remaining_tokens == 50


def test_the_concurrency_cap_counts_requests_in_flight() -> None:
    limiter = KeyLimiter(KeyLimits(concurrency=2), now=0.0)
    first = admitted(limiter.admit(0.0))
    admitted(limiter.admit(0.0))
    refused = throttled(limiter.admit(0.0))
    assert refused.limit is Limit.CONCURRENCY
    assert refused.retry_after_s == CONCURRENCY_RETRY_S
    limiter.release(first, 0.0)
    admitted(limiter.admit(0.0))
    assert limiter.in_flight == 2


def _steady(limiter: KeyLimiter, rps: float, until: float) -> float:
    """Admit requests at ``rps`` from t=0 to ``until``; returns the next time."""
    t = 0.0
    while t < until:
        admitted(limiter.admit(t))
        t += 1 / rps
    return t


def test_burst_slope_rejects_a_sudden_ramp_within_rpm() -> None:
    limits = KeyLimits(rpm=6000, burst_slope=0.5, burst_floor_rps=2, burst_window_s=1)
    limiter = KeyLimiter(limits, now=0.0)
    _steady(limiter, rps=2, until=3.0)  # 2 rps: the floor, never over the slope
    verdicts = [limiter.admit(3.0 + i * 0.01) for i in range(10)]
    # The last window held 2 requests, so this one may hold 3: one from the steady
    # rate (t=2.5) and two of the burst.
    assert [isinstance(v, Permit) for v in verdicts] == [True, True] + [False] * 8
    refusals = [throttled(v) for v in verdicts[2:]]
    assert {r.limit for r in refusals} == {Limit.BURST}
    assert limiter.snapshot(3.09).remaining_requests == 100  # RPM was never the limit


def test_without_a_burst_slope_the_same_ramp_passes() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=6000), now=0.0)
    _steady(limiter, rps=2, until=3.0)
    for i in range(10):
        admitted(limiter.admit(3.0 + i * 0.01))


def test_burst_retry_after_is_the_first_time_the_ramp_allows_the_request() -> None:
    limits = KeyLimits(burst_slope=0.5, burst_floor_rps=2, burst_window_s=1)
    limiter = KeyLimiter(limits, now=0.0)
    _steady(limiter, rps=2, until=3.0)
    admitted(limiter.admit(3.0))
    admitted(limiter.admit(3.01))
    wait = throttled(limiter.admit(3.02)).retry_after_s
    assert wait > 0
    throttled(limiter.admit(3.02 + wait - 1e-3))
    admitted(limiter.admit(3.02 + wait))


def test_the_burst_floor_lets_an_idle_key_start() -> None:
    limiter = KeyLimiter(KeyLimits(burst_slope=0.0, burst_floor_rps=2), now=0.0)
    admitted(limiter.admit(0.0))
    admitted(limiter.admit(0.0))
    assert throttled(limiter.admit(0.0)).limit is Limit.BURST


def test_a_retrying_client_ramps_up_by_at_most_the_slope_per_window() -> None:
    limiter = KeyLimiter(KeyLimits(burst_slope=0.5, burst_floor_rps=2), now=0.0)
    pending = [i / 20 for i in range(20 * 15)]  # offers 20 rps from idle for 15 s
    heapq.heapify(pending)
    admitted_at: list[float] = []
    while pending:
        now = heapq.heappop(pending)
        verdict = limiter.admit(now)
        if isinstance(verdict, Throttled):
            heapq.heappush(pending, now + verdict.retry_after_s)  # honours Retry-After
            continue
        admitted_at.append(now)
        limiter.release(verdict, now)
    per_window = [sum(1 for t in admitted_at if s <= t < s + 1) for s in range(16)]
    assert per_window[:7] == [2, 3, 4, 6, 9, 13, 19]  # x1.5 a window, from the floor
    assert per_window[12:15] == [20, 20, 20]  # then the offered rate, backlog drained
    assert len(admitted_at) == 20 * 15


def test_the_refusal_names_the_limit_with_the_longest_wait() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=60, tpm=600), now=0.0)
    admitted(limiter.admit(0.0, tokens=130))
    refused = throttled(limiter.admit(0.0, tokens=10))
    assert refused.limit is Limit.TPM  # 13 s of tokens against 1 s of requests
    assert refused.retry_after_s == pytest.approx(13.0)


def test_the_snapshot_reports_what_remains_and_when_the_bucket_is_full() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=600), now=0.0)
    for _ in range(3):
        admitted(limiter.admit(0.0))
    snapshot = limiter.snapshot(0.0)
    assert (snapshot.limit_requests, snapshot.remaining_requests) == (600, 7)
    assert snapshot.reset_requests_s == pytest.approx(0.3)
    assert snapshot.limit_tokens is None


def test_reconfigure_keeps_the_bucket_level_and_the_requests_in_flight() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=120), now=0.0)
    admitted(limiter.admit(0.0))
    admitted(limiter.admit(0.0))
    limiter.reconfigure(KeyLimits(rpm=1200), now=0.0)
    assert throttled(limiter.admit(0.0)).retry_after_s == pytest.approx(0.05)
    assert limiter.in_flight == 2
    limiter.reconfigure(KeyLimits(), now=0.0)
    admitted(limiter.admit(0.0))


def test_refill_fills_the_buckets() -> None:
    limiter = KeyLimiter(KeyLimits(rpm=60), now=0.0)
    admitted(limiter.admit(0.0))
    throttled(limiter.admit(0.0))
    limiter.refill(0.0)
    admitted(limiter.admit(0.0))


def test_a_token_bucket_does_not_fill_past_its_capacity() -> None:
    bucket = TokenBucket(rate_per_s=10, capacity=5, now=0.0)
    assert bucket.level(100.0) == 5
    bucket.give(3, 100.0)
    assert bucket.level(100.0) == 5
