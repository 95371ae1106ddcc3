"""Whether and when a failed attempt is tried again: budgets per error class, decorrelated jitter.

Delay (AWS Architecture Blog, "Exponential Backoff and Jitter", decorrelated jitter)::

    sleep = min(cap, uniform(base, previous_sleep * 3))     # previous_sleep starts at base

per task and per class, so that retries of many tasks spread out instead of arriving together.
A provider's Retry-After is a floor honoured as given: ``delay = max(retry_after, sleep)``, even
above the cap (waiting less only earns another 429); a Retry-After beyond
``max_retry_after_s`` gives up instead. The jitter chain continues from ``sleep``, not from the
floor, so one long Retry-After does not inflate every later delay.

Budgets (retries, i.e. attempts after the first):

=============  ====================================================  ==================
class          budget                                                delay base / cap
=============  ====================================================  ==================
transient      the task's ``max_retries``                            transient_base/cap
rate-limited   ``rate_limited_retries`` (not the task's fault)       rate_limited_*
burst-rate     ``burst_retries`` (smaller: retries add to the ramp)  burst_base / r.l. cap
timeout        min(``timeout_retries``, the task's ``max_retries``)  transient_base/cap
fatal, soft    never                                                 -
=============  ====================================================  ==================

An AGENT_LOST attempt is retried at once (the agent died, not the provider) on the transient
budget; SCHEDULE_TIMEOUT and CIRCUIT_OPEN are final by construction (the task already waited as
long as it could). ``max_attempts`` caps all classes together.

Pure: the random generator and every input are passed in; nothing reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from deerflow_common import signals
from deerflow_common.errors import ErrorClass, ErrorKind, TaskError
from deerflow_controller.recovery.classify import describe, is_burst_rate
from deerflow_controller.recovery.config import RetryConfig

__all__ = ["Budget", "RetryDecision", "RetryPolicy", "RetryState"]

_FINAL_KINDS = frozenset({ErrorKind.SCHEDULE_TIMEOUT, ErrorKind.CIRCUIT_OPEN})


class Budget(Enum):
    """The retry budget an error draws on; the value is how reasons name it."""

    TRANSIENT = "transient"
    RATE_LIMITED = "rate-limited"
    BURST_RATE = "burst-rate"
    TIMEOUT = "timeout"
    FATAL = "fatal"
    SOFT = "soft"


@dataclass(slots=True)
class RetryState:
    """What the policy remembers of one task between its attempts; the scheduler keeps one on
    the Task (created at the first failure) and passes it to every :meth:`RetryPolicy.decide`."""

    transient: int = 0
    rate_limited: int = 0
    burst_rate: int = 0
    timeout: int = 0
    """Retries granted so far on each budget."""
    attempts: int = 0
    """Failed attempts seen, all classes together."""
    last_budget: Budget | None = None
    last_sleep_s: float = 0.0
    """The previous jittered sleep of ``last_budget``'s chain (before any Retry-After floor)."""

    def used(self, budget: Budget) -> int:
        if budget is Budget.TRANSIENT:
            return self.transient
        if budget is Budget.RATE_LIMITED:
            return self.rate_limited
        if budget is Budget.BURST_RATE:
            return self.burst_rate
        if budget is Budget.TIMEOUT:
            return self.timeout
        return 0

    def grant(self, budget: Budget) -> int:
        """Count one more retry on ``budget``; returns the retries used on it now."""
        if budget is Budget.TRANSIENT:
            self.transient += 1
            return self.transient
        if budget is Budget.RATE_LIMITED:
            self.rate_limited += 1
            return self.rate_limited
        if budget is Budget.BURST_RATE:
            self.burst_rate += 1
            return self.burst_rate
        self.timeout += 1
        return self.timeout


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Retry after ``delay_s`` seconds, or give up; ``reason`` says why in one sentence."""

    retry: bool
    delay_s: float
    error_class: ErrorClass
    budget: Budget
    used: int
    """Retries of this budget including this one (when ``retry``), else those already used."""
    limit: int
    """The budget's size for this task."""
    reason: str


class RetryPolicy:
    """Decides retries from an error's class, the task's state and the provider's signals."""

    def __init__(self, config: RetryConfig | None = None) -> None:
        self.config = config or RetryConfig()

    def budget_for(self, cls: ErrorClass, metadata: Mapping[str, str]) -> Budget:
        if cls == ErrorClass.RATE_LIMITED:
            return Budget.BURST_RATE if is_burst_rate(metadata) else Budget.RATE_LIMITED
        if cls == ErrorClass.TIMEOUT:
            return Budget.TIMEOUT
        if cls == ErrorClass.FATAL:
            return Budget.FATAL
        if cls == ErrorClass.SOFT:
            return Budget.SOFT
        return Budget.TRANSIENT

    def limit(self, budget: Budget, max_retries: int) -> int:
        """Retries the budget allows a task whose ``max_retries`` is given."""
        cfg = self.config
        if budget is Budget.TRANSIENT:
            return max(0, max_retries)
        if budget is Budget.RATE_LIMITED:
            return cfg.rate_limited_retries
        if budget is Budget.BURST_RATE:
            return cfg.burst_retries
        if budget is Budget.TIMEOUT:
            return max(0, min(cfg.timeout_retries, max_retries))
        return 0

    def _base_cap(self, budget: Budget) -> tuple[float, float]:
        cfg = self.config
        if budget is Budget.RATE_LIMITED:
            return cfg.rate_limited_base_s, cfg.rate_limited_cap_s
        if budget is Budget.BURST_RATE:
            return cfg.burst_base_s, max(cfg.burst_base_s, cfg.rate_limited_cap_s)
        return cfg.transient_base_s, cfg.transient_cap_s

    def decide(
        self,
        state: RetryState,
        error: TaskError,
        cls: ErrorClass,
        metadata: Mapping[str, str],
        *,
        max_retries: int,
        rng: random.Random,
    ) -> RetryDecision:
        """Decide one failed attempt's fate and record it in ``state``.

        ``cls`` is :func:`~.classify.classify`'s answer; ``max_retries`` the task's. Draws one
        number from ``rng`` when it retries with a delay, none otherwise."""
        state.attempts += 1
        budget = self.budget_for(cls, metadata)
        limit = self.limit(budget, max_retries)
        used = state.used(budget)
        what = f"{budget.value} {describe(error, metadata)}"

        def give_up(why: str) -> RetryDecision:
            return RetryDecision(False, 0.0, cls, budget, used, limit, f"{what}; {why}")

        if budget is Budget.FATAL:
            return give_up("not retried: retrying cannot change the answer")
        if budget is Budget.SOFT:
            return give_up("not retried: the provider refused the content, and would again")
        if error.kind in _FINAL_KINDS:
            return give_up("not retried: the task already waited as long as it could")
        if used >= limit:
            return give_up(f"gave up: retry budget of {limit} used")
        if state.attempts >= self.config.max_attempts:
            return give_up(f"gave up after {state.attempts} attempts (max_attempts)")
        retry_after = error.retry_after_s or signals.number(metadata, signals.RETRY_AFTER_S) or 0.0
        if retry_after > self.config.max_retry_after_s:
            return give_up(
                f"gave up: the provider asked for a wait of {retry_after:g} s, longer than "
                f"{self.config.max_retry_after_s:g} s"
            )
        n = state.grant(budget)
        head = f"{what}; retry {n} of {limit} in"
        if error.kind == ErrorKind.AGENT_LOST:
            return RetryDecision(
                True, 0.0, cls, budget, n, limit, f"{head} 0 s (at once, on another agent)"
            )
        base, cap = self._base_cap(budget)
        prev = state.last_sleep_s if state.last_budget is budget else base
        sleep = min(cap, rng.uniform(base, max(base, prev * 3.0)))
        state.last_budget, state.last_sleep_s = budget, sleep
        if retry_after > sleep:
            how = f"Retry-After {retry_after:g} s, above the jitter's {sleep:.2f} s"
            return RetryDecision(
                True, retry_after, cls, budget, n, limit, f"{head} {retry_after:.2f} s ({how})"
            )
        return RetryDecision(
            True, sleep, cls, budget, n, limit, f"{head} {sleep:.2f} s (decorrelated jitter)"
        )
