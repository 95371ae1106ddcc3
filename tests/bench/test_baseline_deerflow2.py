"""DeerFlow 2.0's execution as ``deerflow bench research --system deerflow2`` runs it: each
behaviour of DeerFlow 2.0's source it reproduces, tested on the component (fake clock where the
component is pure)."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from deerflow_bench._baseline_deerflow2 import (
    CircuitBreaker,
    CircuitOpen,
    LlmMiddleware,
    SubagentPools,
    classify,
    decorrelated_jitter_ms,
    retry_after_ms,
)
from deerflow_bench._baseline_http import ProviderError

from .fake_clock import FakeClock


def test_sub_agents_run_three_at_a_time_per_process_in_submission_order() -> None:
    pools = SubagentPools()
    started: list[int] = []
    lock = threading.Condition()
    release = threading.Event()

    def work(i: int):  # type: ignore[no-untyped-def]
        async def run() -> int:
            with lock:
                started.append(i)
                lock.notify_all()
            await asyncio.get_running_loop().run_in_executor(None, release.wait)
            return i

        return run

    try:
        futures = [pools.submit(work(i)) for i in range(7)]
        with lock:
            assert lock.wait_for(lambda: len(started) == 3, timeout=10)
        assert sorted(started) == [0, 1, 2]  # the first three submitted; the rest wait
        assert pools.running == 3
        release.set()
        assert [f.result(timeout=10) for f in futures] == list(range(7))
        assert pools.max_running_seen == 3
        assert sorted(started) == list(range(7))
        assert pools.scheduler._max_workers == 3 and pools.execution._max_workers == 3
    finally:
        release.set()
        pools.shutdown()


def test_decorrelated_jitter_stays_between_the_base_and_three_times_the_last_delay_capped() -> None:
    rng = random.Random(1)
    prev = None
    for _ in range(2000):
        delay = decorrelated_jitter_ms(prev, base_ms=1000, cap_ms=8000, rng=rng)
        high = min(8000, max(1000, (1000 if prev is None else prev) * 3))
        assert 1000 <= delay <= high
        prev = delay
    firsts = {decorrelated_jitter_ms(None, base_ms=1000, cap_ms=8000, rng=rng) for _ in range(500)}
    assert min(firsts) >= 1000 and max(firsts) <= 3000 and len(firsts) > 100  # jittered
    bursts = [decorrelated_jitter_ms(None, base_ms=5000, cap_ms=8000, rng=rng) for _ in range(500)]
    assert min(bursts) >= 5000 and max(bursts) <= 8000
    assert decorrelated_jitter_ms(None, base_ms=9000, cap_ms=8000, rng=rng) == 8000


def test_retry_after_is_read_in_milliseconds_seconds_or_as_an_http_date() -> None:
    assert retry_after_ms({"retry-after-ms": "1500"}, 0.0) == 1500
    assert retry_after_ms({"Retry-After": "2"}, 0.0) == 2000
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_ms({"retry-after": date}, now.timestamp()) == 30000
    assert retry_after_ms({}, 0.0) is None


def test_errors_are_classified_as_deerflow_2_does() -> None:
    assert classify(429, "Rate limit reached") == (True, "transient")
    assert classify(503, "The engine is currently overloaded.") == (True, "transient")
    assert classify(0, "request timeout") == (True, "transient")
    assert classify(429, '{"code": "limit_burst_rate"}') == (True, "burst_rate")
    assert classify(429, "insufficient_quota") == (False, "quota")
    assert classify(401, "Unauthorized") == (False, "auth")
    assert classify(400, "bad input") == (False, "generic")


async def test_a_retry_after_is_honoured_as_given_not_scaled_nor_jittered() -> None:
    clock = FakeClock()
    mw = LlmMiddleware(clock=clock, scale=0.1)
    answers: list[Exception | bytes] = [
        ProviderError(429, "Rate limit reached", {"retry-after": "2"}),
        b"ok",
    ]

    async def attempt() -> bytes:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    assert await mw.call(attempt) == b"ok"
    assert clock.sleeps == [2.0]


async def test_three_attempts_with_jittered_backoff_then_the_failure_counts_for_the_breaker() -> (
    None
):
    clock = FakeClock()
    mw = LlmMiddleware(clock=clock, rng=random.Random(3))
    attempts = 0

    async def attempt() -> bytes:
        nonlocal attempts
        attempts += 1
        raise ProviderError(500, "The server had an error")

    with pytest.raises(ProviderError):
        await mw.call(attempt)
    assert attempts == 3
    assert len(clock.sleeps) == 2
    assert 1.0 <= clock.sleeps[0] <= 3.0
    assert 1.0 <= clock.sleeps[1] <= min(8.0, clock.sleeps[0] * 3)
    assert mw.breaker is not None and mw.breaker.failures == 1


async def test_a_burst_rate_error_gets_two_attempts_from_a_five_second_base() -> None:
    clock = FakeClock()
    mw = LlmMiddleware(clock=clock)
    attempts = 0

    async def attempt() -> bytes:
        nonlocal attempts
        attempts += 1
        raise ProviderError(429, '{"error": {"code": "limit_burst_rate"}}')

    with pytest.raises(ProviderError):
        await mw.call(attempt)
    assert attempts == 2
    assert len(clock.sleeps) == 1 and 5.0 <= clock.sleeps[0] <= 8.0
    assert mw.breaker is not None and mw.breaker.failures == 0  # burst failures do not count


def test_the_breaker_opens_after_5_failures_for_60_s_then_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    for _ in range(4):
        breaker.record_failure()
    assert not breaker.is_open()
    breaker.record_failure()
    assert breaker.is_open()
    clock.t = 59.9
    assert breaker.is_open()
    clock.t = 60.0
    assert not breaker.is_open()  # this caller is the half-open probe
    assert breaker.is_open()  # nobody else meanwhile
    breaker.record_failure()  # the probe failed: open again for 60 s
    assert breaker.is_open()
    clock.t = 120.0
    assert not breaker.is_open()
    breaker.record_success()
    assert breaker.state == "closed" and not breaker.is_open()


async def test_an_open_breaker_fails_calls_fast() -> None:
    clock = FakeClock()
    mw = LlmMiddleware(clock=clock)
    assert mw.breaker is not None
    for _ in range(5):
        mw.breaker.record_failure()

    async def attempt() -> bytes:
        raise AssertionError("the provider must not be called")

    with pytest.raises(CircuitOpen):
        await mw.call(attempt)


async def test_the_in_flight_cap_holds_llm_calls_per_attempt() -> None:
    mw = LlmMiddleware(max_concurrent_calls=2)
    in_flight = peak = 0
    gate = asyncio.Event()
    two_in = asyncio.Event()

    async def attempt() -> bytes:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            two_in.set()
        await gate.wait()
        in_flight -= 1
        return b"ok"

    calls = [asyncio.ensure_future(mw.call(attempt)) for _ in range(5)]
    await two_in.wait()
    gate.set()
    assert await asyncio.gather(*calls) == [b"ok"] * 5
    assert peak == 2
