"""A brown-out, simulated with a fake clock: the provider fails 30 % of requests with a 503 for
a minute. Retries (decorrelated jitter, per-class budgets) and the handler's circuit breaker
must get nearly every task through without a retry storm.

The simulation is the scheduler's use of the recovery policy in miniature: allow before
dispatch, record outcomes, decide retries, arm timers from ``next_change``."""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from deerflow_common import signals
from deerflow_common.errors import ErrorKind, TaskError
from deerflow_controller.recovery import (
    CircuitBreakers,
    CircuitState,
    RetryPolicy,
    RetryState,
    classify,
    handler_key,
)

SLOTS = 16
ARRIVALS_PER_S = 10
ARRIVE_FOR_S = 100
RUN_S = 1.0
BROWNOUT = (20.0, 80.0)
FAILURE_P = 0.3
MAX_RETRIES = 3
KEY = handler_key("llm")


@dataclass
class _Task:
    id: str
    arrived: float
    retry: RetryState = field(default_factory=RetryState)
    attempts: int = 0
    outcome: str = ""


@dataclass
class _Result:
    tasks: list[_Task]
    trips: int
    brownout_attempts: int
    brownout_arrivals: int
    max_started_per_s: int


def _simulate(seed: int) -> _Result:
    provider = random.Random(seed)
    rng = random.Random(seed + 1)
    policy = RetryPolicy()
    breakers = CircuitBreakers()
    tasks = [_Task(f"t{i}", i / ARRIVALS_PER_S) for i in range(ARRIVALS_PER_S * ARRIVE_FOR_S)]
    waiting: list[tuple[float, int, _Task]] = [(t.arrived, i, t) for i, t in enumerate(tasks)]
    heapq.heapify(waiting)
    ready: deque[_Task] = deque()
    running: list[tuple[float, int, _Task]] = []
    started_per_s: dict[int, int] = {}
    brownout_attempts = 0
    seq = len(tasks)
    now = 0.0
    while waiting or ready or running:
        wakes = [w[0] for w in (waiting[:1] + running[:1])]
        change = breakers.next_change(now)
        if change is not None and ready:
            wakes.append(change)
        now = max(now, min(wakes))
        breakers.advance(now)
        while running and running[0][0] <= now:
            _, _, task = heapq.heappop(running)
            failed = BROWNOUT[0] <= now - RUN_S < BROWNOUT[1] and provider.random() < FAILURE_P
            if not failed:
                breakers.record_success(KEY, task.id, now)
                task.outcome = "ok"
                continue
            meta = {signals.HTTP_STATUS: "503"}
            error = TaskError(ErrorKind.HANDLER_ERROR, "HTTP 503", True)
            cls = classify(error, meta)
            breakers.record_failure(KEY, task.id, cls, now)
            decision = policy.decide(task.retry, error, cls, meta, max_retries=MAX_RETRIES, rng=rng)
            if not decision.retry:
                task.outcome = "failed"
                continue
            seq += 1
            heapq.heappush(waiting, (now + decision.delay_s, seq, task))
        while waiting and waiting[0][0] <= now:
            ready.append(heapq.heappop(waiting)[2])
        while ready and len(running) < SLOTS and breakers.allow(KEY, now, ready[0].id):
            task = ready.popleft()
            task.attempts += 1
            if BROWNOUT[0] <= now < BROWNOUT[1]:
                brownout_attempts += 1
            started_per_s[int(now)] = started_per_s.get(int(now), 0) + 1
            seq += 1
            heapq.heappush(running, (now + RUN_S, seq, task))
        if not waiting and not running and ready:
            # Only the breaker holds work back: it must have a timer, or we would hang.
            assert breakers.state(KEY, now) != CircuitState.CLOSED
            assert breakers.next_change(now) is not None
    arrivals = sum(1 for t in tasks if BROWNOUT[0] <= t.arrived < BROWNOUT[1])
    return _Result(
        tasks,
        breakers.snapshot()[KEY].trips,
        brownout_attempts,
        arrivals,
        max(started_per_s.values()),
    )


def test_a_brown_out_is_ridden_out_without_a_retry_storm() -> None:
    result = _simulate(seed=11)
    tasks = result.tasks
    succeeded = sum(t.outcome == "ok" for t in tasks)
    attempts = [t.attempts for t in tasks]

    assert all(t.outcome for t in tasks)  # every task reached an end
    assert succeeded / len(tasks) >= 0.99
    assert max(attempts) <= 1 + MAX_RETRIES  # budgets bound every task
    assert sum(attempts) / len(tasks) <= 1.25
    # During the brown-out, attempts per arriving task stay below the no-breaker expectation
    # of 1 / (1 - 0.3) = 1.43: retries do not pile onto a failing provider.
    assert result.brownout_attempts / result.brownout_arrivals < 1 / (1 - FAILURE_P)
    assert result.trips >= 1  # 30 % 5xx opens the handler's circuit (docs/WORKLOAD.md)


def test_the_simulation_is_deterministic_for_a_seed() -> None:
    a, b = _simulate(seed=5), _simulate(seed=5)

    assert [t.attempts for t in a.tasks] == [t.attempts for t in b.tasks]
    assert a.trips == b.trips
