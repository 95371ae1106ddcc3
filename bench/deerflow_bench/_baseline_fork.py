"""The fork's executor (hqzhon/smart-deer-flow @ e580772), rewritten from the facts of its
public source (``parallel_executor.py``, ``rate_limiter.py``, ``error_handler.py``) to run
research jobs as the fork does.

How the fork runs a report, and so how this module does:
- ``src/graph/nodes.py`` creates a ``ParallelExecutor(max_concurrent_tasks=3)`` for the plan's
  unfinished steps (one per research request) and runs every step as a ``ParallelTask``; the
  coordinator, planner and reporter calls run outside it.
- The executor (:class:`ParallelExecutor`): pending tasks sorted by priority (high first), then
  topologically; a loop starts ready tasks up to the width, waits for the first to finish (at
  most 1 s), sleeps 0.01 s; a task whose dependency failed is never started. Every attempt
  first ``acquire()``s the process-wide limiter; on success ``record_success()``. A timeout
  fails the task unretried; other errors are classified by substring (:func:`classify`) and
  retried after ``2**attempt`` s (1, 2, 4) without jitter, ignoring Retry-After; a rate-limit
  error also calls ``record_failure()``. Every 30 s the width adapts (+1 up to 10 when success
  > 0.9 and no task was rate limited; -1 down to 1 when success < 0.7 or one was).
- The limiter (:class:`ForkRateLimiter`), one per process for every tool and provider: token
  buckets of 10/s and 60/min that say how long to wait without taking a token when short, then
  a sleep of at least ``min_interval`` 0.1 s; after a rate-limit failure a backoff of
  ``min(60, 1.5**failures)`` s, reset by a success.
- Search results: md5 of the query, FIFO, 100 entries (:class:`SearchCache`). In the fork it
  lives per executor and keys on tasks' ``query`` kwargs, which plan steps do not have; here it
  is per process and sees every search: the most it could do.
- ``safe_llm_call`` (the same classifier, ``2**attempt`` s, 3 retries) wraps each of the lead's
  llm calls and, in a step, the whole agent (``agent.ainvoke``): a retryable error restarts the
  step's ReAct loop from its first turn.

``scale`` multiplies every time constant (sleeps, intervals, rates), so the executor keeps its
proportions against a simulator whose latencies are scaled by the same factor.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ._baseline_http import Clock, ProviderError, RealClock

# ------------------------------------------------------- errors (src/llms/error_handler.py)

RATE_LIMIT = "rate_limit_exceeded"
_PATTERNS: list[tuple[str, tuple[str, ...]]] = [
    # In the fork's priority order: the first class with a matching substring wins.
    ("invalid_api_key", ("invalid api key", "api key", "invalid key", "bad api key")),
    ("authentication_error", ("authentication failed", "unauthorized", "auth failed",
                              "authentication error", "invalid credentials", "access denied")),
    ("permission_error", ("permission denied", "forbidden", "access forbidden",
                          "insufficient permissions", "not authorized")),
    ("quota_exceeded", ("quota exceeded", "insufficient quota", "quota_exceeded",
                        "billing quota", "usage limit")),
    (RATE_LIMIT, ("rate limit", "too many requests", "rate_limit_exceeded",
                  "requests per minute", "requests per second", "throttled")),
    ("concurrent_limit_exceeded", ("concurrent limit", "too many concurrent",
                                   "concurrency limit", "parallel requests limit",
                                   "simultaneous requests")),
    ("content_too_long", ("content too long", "token limit exceeded", "maximum context length",
                          "range of input length should be", "input length should be",
                          "context length exceeded", "input too long")),
    ("model_not_found", ("model not found", "model does not exist", "invalid model",
                         "unknown model", "model unavailable")),
    ("data_inspection_failed", ("data_inspection_failed", "content safety", "content policy",
                                "inappropriate content", "content filter", "safety filter")),
    ("bad_request", ("bad request", "invalid request", "malformed request", "400 error",
                     "invalid parameter")),
    ("timeout_error", ("timeout", "request timeout", "read timeout", "connection timeout",
                       "operation timeout", "deadline exceeded")),
    ("network_error", ("network error", "connection error", "connection failed",
                       "network unreachable", "dns resolution failed", "connection refused")),
    ("resource_exhausted", ("resource exhausted", "out of resources", "capacity exceeded",
                            "resource limit", "memory exhausted")),
    ("service_unavailable", ("service unavailable", "server unavailable",
                             "temporarily unavailable", "maintenance mode", "service down")),
    ("internal_server_error", ("internal server error", "server error", "500 error",
                               "internal error", "server fault")),
]  # fmt: skip
RETRIED = frozenset(
    {
        RATE_LIMIT,
        "concurrent_limit_exceeded",
        "network_error",
        "timeout_error",
        "service_unavailable",
        "internal_server_error",
        "resource_exhausted",
    }
)


def classify(message: str) -> str:
    """The fork's error class of an error's text (``unknown_error`` when nothing matches)."""
    text = message.lower()
    for name, patterns in _PATTERNS:
        if any(p in text for p in patterns):
            return name
    return "unknown_error"


def retry_delay_s(attempt: int) -> float:
    """The wait before retry ``attempt + 1``: ``2**attempt`` s, no jitter, no Retry-After."""
    return float(2**attempt)


# ---------------------------------------------------------------- the limiter (rate_limiter.py)


class _Bucket:
    def __init__(self, capacity: float, rate_per_s: float, now: float) -> None:
        self.capacity, self.rate, self.tokens, self.last = capacity, rate_per_s, capacity, now

    def wait_for_token(self, now: float) -> float:
        """Take a token and return 0, or return how long until one would be there (taking
        none), as the fork's ``wait_for_tokens`` does."""
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class ForkRateLimiter:
    """The fork's process-wide limiter: 10/s and 60/min buckets, a ``min_interval`` sleep on
    every acquire, and a backoff of ``min(60, 1.5**failures)`` s after rate-limit failures.
    Every constant is multiplied by ``scale`` (rates divided by it)."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        per_second: float = 10,
        per_minute: float = 60,
        min_interval_s: float = 0.1,
        backoff_factor: float = 1.5,
        max_backoff_s: float = 60.0,
        scale: float = 1.0,
    ) -> None:
        self.clock = clock or RealClock()
        self.scale = scale
        now = self.clock.now()
        self.second = _Bucket(per_second, per_second / scale, now)
        self.minute = _Bucket(per_minute, per_minute / 60.0 / scale, now)
        self.min_interval_s = min_interval_s * scale
        self.backoff_factor, self.max_backoff_s = backoff_factor, max_backoff_s
        self.failures = 0
        self.backoff_s = 0.0
        self.last_failure = 0.0
        self.waited_s = 0.0

    async def acquire(self) -> float:
        """Sleep as the fork does before a request; returns the seconds waited."""
        start = self.clock.now()
        if self.backoff_s > 0:
            remaining = self.backoff_s - (self.clock.now() - self.last_failure)
            if remaining > 0:
                await self.clock.sleep(remaining)
        now = self.clock.now()
        wait = max(self.second.wait_for_token(now), self.minute.wait_for_token(now))
        await self.clock.sleep(max(wait, self.min_interval_s))
        waited = self.clock.now() - start
        self.waited_s += waited
        return waited

    def record_success(self) -> None:
        self.failures, self.backoff_s = 0, 0.0

    def record_failure(self) -> None:
        self.failures += 1
        self.last_failure = self.clock.now()
        self.backoff_s = min(self.max_backoff_s, self.backoff_factor**self.failures) * self.scale


# ---------------------------------------------------------------- the search cache


class SearchCache:
    """md5(str(query)) -> result, first in first out, 100 entries."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, bytes] = OrderedDict()

    @staticmethod
    def key(query: object) -> str:
        return hashlib.md5(str(query).encode()).hexdigest()

    def get(self, query: object) -> bytes | None:
        return self.entries.get(self.key(query))

    def put(self, query: object, result: bytes) -> None:
        if len(self.entries) >= self.capacity:
            self.entries.popitem(last=False)  # the oldest, whether or not it was read since
        self.entries[self.key(query)] = result


# ---------------------------------------------------------------- the executor


class Priority(IntEnum):
    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


@dataclass
class ParallelTask:
    task_id: str
    func: Callable[[], Awaitable[Any]]
    priority: Priority = Priority.NORMAL
    max_retries: int = 3
    timeout_s: float | None = None
    dependencies: tuple[str, ...] = ()


@dataclass
class TaskResult:
    task_id: str
    status: str = "pending"
    result: Any = None
    error: BaseException | None = None
    retry_count: int = 0
    started: float = 0.0
    ended: float = 0.0


def order(tasks: list[ParallelTask]) -> list[ParallelTask]:
    """Priority first (stable, so FIFO within a priority), then in waves of tasks whose
    dependencies are all earlier, as ``_sort_tasks_by_priority_and_dependencies`` does."""
    pending = sorted(tasks, key=lambda t: t.priority, reverse=True)
    placed: set[str] = set()
    out: list[ParallelTask] = []
    known = {t.task_id for t in tasks}
    while pending:
        wave = [t for t in pending if all(d in placed or d not in known for d in t.dependencies)]
        if not wave:
            wave = [pending[0]]  # a cycle: the fork takes the first and carries on
        for t in wave:
            out.append(t)
            placed.add(t.task_id)
            pending.remove(t)
    return out


@dataclass
class ParallelExecutor:
    """One executor per research request. ``on_width`` is told every change of the width."""

    limiter: ForkRateLimiter
    max_concurrent: int = 3
    clock: Clock = field(default_factory=RealClock)
    scale: float = 1.0
    adaptive: bool = True
    on_width: Callable[[int], None] = lambda _: None
    pending: list[ParallelTask] = field(default_factory=list)
    running: dict[str, asyncio.Task[TaskResult]] = field(default_factory=dict)
    completed: dict[str, TaskResult] = field(default_factory=dict)
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0
    max_running_seen: int = 0

    def __post_init__(self) -> None:
        self.last_adjustment = self.clock.now()

    def add_tasks(self, tasks: list[ParallelTask]) -> None:
        self.pending.extend(tasks)

    async def execute_all(self) -> dict[str, TaskResult]:
        """Run every task that can run; blocks until none is pending or running. A task whose
        dependency failed stays pending, and the fork loops on it forever: here the loop ends
        when nothing runs and nothing can start, and such a task is reported 'never_started'."""
        self.pending = order(self.pending)
        self.on_width(self.max_concurrent)
        while self.pending or self.running:
            if self.adaptive:
                self._adapt()
            self._start_ready()
            if self.running:
                await asyncio.wait(
                    self.running.values(),
                    timeout=1.0 * self.scale,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for tid, task in list(self.running.items()):
                    if task.done():
                        self.completed[tid] = task.result()
                        del self.running[tid]
            elif self.pending:
                for t in self.pending:
                    self.completed[t.task_id] = TaskResult(t.task_id, "never_started")
                self.pending = []
            await self.clock.sleep(0.01 * self.scale)
        self.on_width(0)
        return self.completed

    def _start_ready(self) -> None:
        free = self.max_concurrent - len(self.running)
        ready = [
            t
            for t in self.pending
            if all(
                d in self.completed and self.completed[d].status == "completed"
                for d in t.dependencies
            )
        ][: max(0, free)]
        for t in ready:
            self.pending.remove(t)
            self.running[t.task_id] = asyncio.ensure_future(self._run(t))
        self.max_running_seen = max(self.max_running_seen, len(self.running))

    async def _run(self, task: ParallelTask) -> TaskResult:
        result = TaskResult(task.task_id, "running", started=self.clock.now())
        for attempt in range(task.max_retries + 1):
            try:
                await self.limiter.acquire()
                if task.timeout_s:
                    value = await asyncio.wait_for(task.func(), task.timeout_s)
                else:
                    value = await task.func()
            except TimeoutError as e:
                result.status, result.error = "failed", e
                self.failures += 1
                break
            except Exception as e:
                kind = classify(str(e))
                if kind == RATE_LIMIT:
                    self.limiter.record_failure()
                    self.rate_limited += 1
                if attempt < task.max_retries and kind in RETRIED:
                    result.retry_count = attempt + 1
                    await self.clock.sleep(retry_delay_s(attempt) * self.scale)
                    continue
                result.status, result.error = "failed", e
                self.failures += 1
                break
            else:
                result.status, result.result = "completed", value
                self.limiter.record_success()
                self.successes += 1
                break
        result.ended = self.clock.now()
        return result

    def _adapt(self) -> None:
        now = self.clock.now()
        if now - self.last_adjustment < 30 * self.scale:
            return
        total = self.successes + self.failures
        success = self.successes / total if total else 1.0
        if success > 0.9 and self.rate_limited == 0:
            self.max_concurrent = min(self.max_concurrent + 1, 10)
        elif success < 0.7 or self.rate_limited > 0:
            self.max_concurrent = max(self.max_concurrent - 1, 1)
        self.on_width(self.max_concurrent)
        self.last_adjustment = now


async def safe_llm_call(
    call: Callable[[], Awaitable[bytes]],
    *,
    clock: Clock,
    scale: float = 1.0,
    max_retries: int = 3,
) -> bytes:
    """The fork's ``safe_llm_call_async``: the same classifier, ``2**attempt`` s, no jitter."""
    for attempt in range(max_retries + 1):
        try:
            return await call()
        except ProviderError as e:
            if attempt < max_retries and classify(str(e)) in RETRIED:
                await clock.sleep(retry_delay_s(attempt) * scale)
                continue
            raise
    raise AssertionError("unreachable")
