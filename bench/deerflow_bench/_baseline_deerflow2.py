"""DeerFlow 2.0's execution (bytedance/deer-flow, main @ f1f4af9), rewritten from the facts of
its public source to run research jobs as DeerFlow 2.0 does.

- Sub-agents (``subagents/executor.py``): module-level thread pools per process, shared by every
  request: a scheduler pool of 3 workers hands each sub-agent to an execution pool of 3 and
  waits for it (at most ``timeout_seconds``, 1,800 s). So at most 3 sub-agents run at once in a
  process, whatever the number of requests; the others queue FIFO (:class:`SubagentPools`).
- LLM calls (``llm_error_handling_middleware.py``, :class:`LlmMiddleware`): retriable are HTTP
  408, 409, 425, 429, 500, 502, 503, 504, connection errors and timeouts, and "busy" wordings;
  quota, billing and auth are fatal; a burst-rate 429 (``limit_burst_rate``) gets 2 attempts
  from a 5 s base. Delays are decorrelated jitter ``randint(base, min(cap, max(base, prev*3)))``
  ms with base 1 s, cap 8 s, 3 attempts, unless the answer names a Retry-After (``retry-after-ms``
  or ``retry-after`` in seconds or an HTTP date), honoured as is. A circuit breaker opens after 5
  calls that failed for good, for 60 s, then lets one half-open probe through. An in-flight cap
  per process (``max_concurrent_calls``) is held per attempt, not across the backoff. A call that
  fails for good returns a fallback message: the sub-agent stops there (a degraded step), the
  lead agent has no plan or report (a failed job).
- Tools: web search, 5 results, no retry; web fetch through Jina with a 10 s timeout and no
  retry. A tool's error goes back to the model as text (the step goes on without it).

``scale`` multiplies the executor's own time constants (backoff base and cap, breaker recovery,
the fetch timeout, the sub-agent timeout); a provider's Retry-After is honoured as given.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

from ._baseline_http import Clock, ProviderError, RealClock

T = TypeVar("T")

RETRIABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_BUSY = ("server busy", "temporarily unavailable", "try again later", "please retry",
         "please try again", "overloaded", "high demand", "rate limit")  # fmt: skip
_QUOTA = ("insufficient_quota", "quota", "billing", "credit", "payment")
_AUTH = ("authentication", "unauthorized", "invalid api key", "invalid_api_key", "permission",
         "forbidden", "access denied")  # fmt: skip
_BURST = ("limit_burst_rate", "rate increased too quickly", "burst rate")

SCHEDULER_WORKERS = 3
EXECUTION_WORKERS = 3
"""``MAX_CONCURRENT_SUBAGENTS``: the module-level pools' widths, per process."""
SUBAGENT_TIMEOUT_S = 1800.0
WEB_FETCH_TIMEOUT_S = 10.0


def classify(status: int, text: str) -> tuple[bool, str]:
    """(retriable, reason) as the middleware's ``_classify_error``; ``status`` 0 is a
    connection error or a timeout."""
    lowered = text.lower()
    if any(p in lowered for p in _QUOTA):
        return False, "quota"
    if any(p in lowered for p in _AUTH):
        return False, "auth"
    if any(p in lowered for p in _BURST):
        return True, "burst_rate"
    if status == 0 or status in RETRIABLE_STATUS:
        return True, "transient"
    if any(p in lowered for p in _BUSY):
        return True, "busy"
    return False, "generic"


def decorrelated_jitter_ms(
    prev_ms: int | None, *, base_ms: int, cap_ms: int, rng: random.Random
) -> int:
    """``randint(base, min(cap, max(base, seed * 3)))`` where ``seed`` is the previous delay,
    or the base on the first retry; the cap when the base exceeds it."""
    seed = base_ms if prev_ms is None else prev_ms
    high = min(cap_ms, max(base_ms, seed * 3))
    if high < base_ms:
        return cap_ms
    return rng.randint(base_ms, high)


def retry_after_ms(headers: dict[str, str], now_epoch: float) -> int | None:
    """The provider's Retry-After in ms (``retry-after-ms``, else ``retry-after`` in seconds or
    as an HTTP date), or None."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "retry-after"):
        raw = lowered.get(name)
        if not raw:
            continue
        try:
            return max(0, int(float(raw) * (1 if name.endswith("ms") else 1000)))
        except ValueError:
            try:
                return max(0, int((parsedate_to_datetime(raw).timestamp() - now_epoch) * 1000))
            except (TypeError, ValueError, OverflowError):
                return None
    return None


@dataclass
class CircuitBreaker:
    """Closed -> open after ``threshold`` calls failed for good (a success resets the count);
    open fails fast for ``recovery_s``; then half-open lets one probe through, whose success
    closes it and whose failure opens it again."""

    clock: Clock = field(default_factory=RealClock)
    threshold: int = 5
    recovery_s: float = 60.0
    state: str = "closed"
    failures: int = 0
    open_until: float = 0.0
    probe_in_flight: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def is_open(self) -> bool:
        """True: fail fast. False: go ahead (in half-open, this caller is the probe)."""
        with self._lock:
            if self.state == "open":
                if self.clock.now() < self.open_until:
                    return True
                self.state, self.probe_in_flight = "half_open", False
            if self.state == "half_open":
                if self.probe_in_flight:
                    return True
                self.probe_in_flight = True
            return False

    def record_success(self) -> None:
        with self._lock:
            self.failures, self.open_until, self.state = 0, 0.0, "closed"
            self.probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            if self.state == "half_open":
                self.open_until = self.clock.now() + self.recovery_s
                self.state, self.probe_in_flight = "open", False
                return
            self.failures += 1
            if self.failures >= self.threshold:
                self.open_until = self.clock.now() + self.recovery_s
                if self.state != "open":
                    self.state, self.probe_in_flight = "open", False

    def release_probe(self) -> None:
        with self._lock:
            if self.state == "half_open":
                self.probe_in_flight = False


class CircuitOpen(Exception):
    """The breaker answered instead of the provider."""


@dataclass
class LlmMiddleware:
    """One per process (its breaker and in-flight cap shared by every call of the process)."""

    clock: Clock = field(default_factory=RealClock)
    scale: float = 1.0
    max_attempts: int = 3
    base_ms: int = 1000
    cap_ms: int = 8000
    burst_base_ms: int = 5000
    burst_attempts: int = 2
    max_concurrent_calls: int = 0
    """0: no cap (DeerFlow's default)."""
    rng: random.Random = field(default_factory=random.Random)
    breaker: CircuitBreaker | None = None
    retries: int = 0
    _cap: threading.BoundedSemaphore | None = None

    def __post_init__(self) -> None:
        if self.breaker is None:
            self.breaker = CircuitBreaker(self.clock, recovery_s=60.0 * self.scale)
        if self.max_concurrent_calls > 0:
            self._cap = threading.BoundedSemaphore(self.max_concurrent_calls)

    def delay_ms(self, prev_ms: int | None, error: ProviderError, reason: str) -> int:
        """The wait before the next attempt, in the executor's own (unscaled) ms: the
        provider's Retry-After as given, else decorrelated jitter from the reason's base."""
        given = retry_after_ms(error.headers, time.time())
        if given is not None:
            return given
        base = self.burst_base_ms if reason == "burst_rate" else self.base_ms
        return decorrelated_jitter_ms(prev_ms, base_ms=base, cap_ms=self.cap_ms, rng=self.rng)

    async def call(self, attempt_fn: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run attempts of one LLM call; raises CircuitOpen, or the last ProviderError when
        the call failed for good (DeerFlow returns a fallback message there)."""
        assert self.breaker is not None
        if self.breaker.is_open():
            raise CircuitOpen("The configured LLM provider is currently unavailable.")
        attempt, prev_ms = 1, None
        while True:
            try:
                answer = await self._bounded(attempt_fn)
            except ProviderError as e:
                retriable, reason = classify(e.status, str(e))
                budget = self.burst_attempts if reason == "burst_rate" else self.max_attempts
                if retriable and attempt < budget:
                    prev_ms = self.delay_ms(prev_ms, e, reason)
                    given = retry_after_ms(e.headers, time.time()) is not None
                    self.retries += 1
                    await self.clock.sleep(prev_ms / 1000 * (1.0 if given else self.scale))
                    attempt += 1
                    continue
                if retriable and reason != "burst_rate":
                    self.breaker.record_failure()
                else:
                    self.breaker.release_probe()
                raise
            self.breaker.record_success()
            return answer

    async def _bounded(self, attempt_fn: Callable[[], Awaitable[bytes]]) -> bytes:
        cap = self._cap
        if cap is None:
            return await attempt_fn()
        await asyncio.get_running_loop().run_in_executor(None, cap.acquire)
        try:
            return await attempt_fn()
        finally:
            cap.release()


class SubagentPools:
    """The 3 + 3 module-level pools of a process: ``submit`` queues a sub-agent FIFO; at most
    ``EXECUTION_WORKERS`` run at once. ``run`` is what an execution thread runs (its own event
    loop, as a sub-agent thread does)."""

    def __init__(
        self,
        scheduler_workers: int = SCHEDULER_WORKERS,
        execution_workers: int = EXECUTION_WORKERS,
        timeout_s: float = SUBAGENT_TIMEOUT_S,
    ) -> None:
        self.scheduler = ThreadPoolExecutor(scheduler_workers, thread_name_prefix="subagent-sched")
        self.execution = ThreadPoolExecutor(execution_workers, thread_name_prefix="subagent-exec")
        self.timeout_s = timeout_s
        self.width = execution_workers
        self._lock = threading.Lock()
        self.running = 0
        self.max_running_seen = 0

    def submit(self, work: Callable[[], Awaitable[T]]) -> Future[T]:
        """Queue a sub-agent; the future fails with TimeoutError past the timeout."""
        return self.scheduler.submit(self._schedule, work)

    def _schedule(self, work: Callable[[], Awaitable[T]]) -> T:
        return self.execution.submit(self._execute, work).result(timeout=self.timeout_s)

    def _execute(self, work: Callable[[], Awaitable[T]]) -> T:
        with self._lock:
            self.running += 1
            self.max_running_seen = max(self.max_running_seen, self.running)
        try:
            return asyncio.run(_call(work))
        finally:
            with self._lock:
                self.running -= 1

    def shutdown(self) -> None:
        self.scheduler.shutdown(wait=True, cancel_futures=True)
        self.execution.shutdown(wait=True, cancel_futures=True)


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()
