"""The fork's executor as ``deerflow bench research --system fork`` runs it: each behaviour of
the fork's source it reproduces, tested on the component with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from deerflow_bench._baseline_fork import (
    RETRIED,
    ForkRateLimiter,
    ParallelExecutor,
    ParallelTask,
    Priority,
    SearchCache,
    _Bucket,
    classify,
    order,
    retry_delay_s,
    safe_llm_call,
)
from deerflow_bench._baseline_http import ProviderError

from .fake_clock import FakeClock


def _executor(clock: FakeClock, width: int = 3) -> ParallelExecutor:
    limiter = ForkRateLimiter(clock, min_interval_s=0.0)
    return ParallelExecutor(limiter, width, clock=clock, adaptive=False)


async def test_the_executor_runs_at_most_three_tasks_at_once_and_starts_the_next_as_one_ends() -> (
    None
):
    clock = FakeClock()
    executor = _executor(clock)
    started: list[str] = []
    gates = {f"t{i}": asyncio.Event() for i in range(6)}
    moved = asyncio.Event()

    def task(tid: str) -> ParallelTask:
        async def run() -> None:
            started.append(tid)
            moved.set()
            await gates[tid].wait()

        return ParallelTask(tid, run)

    executor.add_tasks([task(f"t{i}") for i in range(6)])
    runner = asyncio.ensure_future(executor.execute_all())
    while len(started) < 3:
        moved.clear()
        await moved.wait()
    assert started == ["t0", "t1", "t2"]
    assert len(executor.running) == 3
    moved.clear()
    gates["t1"].set()
    await moved.wait()
    assert started == ["t0", "t1", "t2", "t3"]
    for gate in gates.values():
        gate.set()
    results = await runner
    assert {r.status for r in results.values()} == {"completed"}
    assert executor.max_running_seen == 3


def test_tasks_are_ordered_by_priority_then_fifo_then_after_their_dependencies() -> None:
    async def nothing() -> None:
        return None

    tasks = [
        ParallelTask("a", nothing, Priority.NORMAL),
        ParallelTask("b", nothing, Priority.HIGH),
        ParallelTask("c", nothing, Priority.NORMAL),
        ParallelTask("d", nothing, Priority.LOW),
        ParallelTask("e", nothing, Priority.HIGH),
        ParallelTask("f", nothing, Priority.CRITICAL, dependencies=("d",)),
    ]
    assert [t.task_id for t in order(tasks)] == ["b", "e", "a", "c", "d", "f"]


def test_retries_wait_one_two_four_seconds_without_jitter() -> None:
    assert [retry_delay_s(a) for a in range(3)] == [1.0, 2.0, 4.0]
    assert [retry_delay_s(a) for a in range(3)] == [retry_delay_s(a) for a in range(3)]


async def test_a_rate_limited_task_is_retried_after_1_2_4_s_ignoring_retry_after() -> None:
    clock = FakeClock()
    executor = _executor(clock)
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise ProviderError(429, "Rate limit reached for requests", {"retry-after": "30"})
        return "ok"

    executor.add_tasks([ParallelTask("t", flaky)])
    results = await executor.execute_all()
    assert results["t"].status == "completed"
    assert results["t"].retry_count == 3
    retry_sleeps = [s for s in clock.sleeps if s in (1.0, 2.0, 4.0)]
    assert retry_sleeps == [1.0, 2.0, 4.0]
    assert 30.0 not in clock.sleeps


async def test_a_timeout_fails_the_task_without_a_retry() -> None:
    clock = FakeClock()
    executor = _executor(clock)
    attempts = 0

    async def hangs() -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.Event().wait()

    executor.add_tasks([ParallelTask("t", hangs, timeout_s=0.01)])
    results = await executor.execute_all()
    assert results["t"].status == "failed"
    assert attempts == 1


async def test_a_fatal_error_is_not_retried_and_its_dependents_never_start() -> None:
    clock = FakeClock()
    executor = _executor(clock)
    ran: list[str] = []

    async def fatal() -> None:
        ran.append("a")
        raise ProviderError(401, "Incorrect API key provided")

    async def after() -> None:
        ran.append("b")

    executor.add_tasks([ParallelTask("a", fatal), ParallelTask("b", after, dependencies=("a",))])
    results = await executor.execute_all()
    assert ran == ["a"]
    assert results["a"].status == "failed"
    assert results["b"].status == "never_started"


def test_errors_are_classified_by_substring_in_the_forks_priority_order() -> None:
    assert classify("Error code: 429 - Rate limit reached for requests per minute") in RETRIED
    assert classify("Connection error: request timeout") == "timeout_error"
    assert classify("Error code: 401 - Incorrect API key provided") == "invalid_api_key"
    assert classify("insufficient quota for this month") == "quota_exceeded"
    # OpenAI's own 5xx wording matches none of the fork's patterns: its 5xx are not retried.
    assert classify("Error code: 500 - The server had an error processing your request.") == (
        "unknown_error"
    )
    assert classify("Error code: 503 - internal server error") in RETRIED


def test_the_limiters_buckets_allow_10_per_second_and_60_per_minute() -> None:
    second = _Bucket(10, 10.0, now=0.0)
    assert [second.wait_for_token(0.0) for _ in range(10)] == [0.0] * 10
    assert second.wait_for_token(0.0) == pytest.approx(0.1)
    minute = _Bucket(60, 1.0, now=0.0)
    assert all(minute.wait_for_token(0.0) == 0.0 for _ in range(60))
    assert minute.wait_for_token(0.0) == pytest.approx(1.0)
    # A short bucket says how long to wait but takes no token (the fork's wait_for_tokens).
    assert minute.wait_for_token(0.0) == pytest.approx(1.0)


async def test_every_acquire_sleeps_at_least_the_min_interval() -> None:
    clock = FakeClock()
    limiter = ForkRateLimiter(clock)
    for _ in range(5):
        await limiter.acquire()
    assert clock.sleeps == [pytest.approx(0.1)] * 5


async def test_rate_limit_failures_back_off_1_5_to_the_failures_up_to_60_s_until_a_success() -> (
    None
):
    clock = FakeClock()
    limiter = ForkRateLimiter(clock, min_interval_s=0.0)
    for _ in range(3):
        limiter.record_failure()
    await limiter.acquire()
    assert clock.sleeps[0] == pytest.approx(1.5**3)
    for _ in range(20):
        limiter.record_failure()
    assert limiter.backoff_s == 60.0
    limiter.record_success()
    clock.sleeps.clear()
    await limiter.acquire()
    assert clock.sleeps == [0.0]


async def test_concurrency_adapts_every_30_s_between_1_and_10() -> None:
    clock = FakeClock()
    executor = _executor(clock)
    executor.successes = 10
    clock.t = 29.0
    executor._adapt()
    assert executor.max_concurrent == 3
    clock.t = 30.0
    executor._adapt()
    assert executor.max_concurrent == 4
    executor.rate_limited = 1
    for k in range(10):
        clock.t = 60.0 + 30 * k
        executor._adapt()
    assert executor.max_concurrent == 1


def test_the_search_cache_keeps_100_entries_first_in_first_out_by_md5_of_the_query() -> None:
    cache = SearchCache()
    for i in range(100):
        cache.put(f"query {i}", b"x")
    assert cache.get("query 0") == b"x"  # a read does not keep it
    cache.put("query 100", b"y")
    assert cache.get("query 0") is None
    assert cache.get("query 1") == b"x"
    assert cache.get("Query 1") is None  # exact text only
    assert SearchCache.key("q") == "7694f4a66316e53c8cdd9d9954bd611d"


async def test_llm_calls_retry_retryable_errors_after_1_2_4_s() -> None:
    clock = FakeClock()
    attempts = 0

    async def call() -> bytes:
        nonlocal attempts
        attempts += 1
        raise ProviderError(429, "too many requests")

    with pytest.raises(ProviderError):
        await safe_llm_call(call, clock=clock)
    assert attempts == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]
