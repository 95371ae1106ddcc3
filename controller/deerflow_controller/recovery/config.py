"""Knobs of the recovery policy: retries, circuit breakers and quarantine.

Frozen dataclasses, each field documented with its default and why. Durations in seconds."""

from __future__ import annotations

from dataclasses import dataclass, field

from deerflow_common.errors import ErrorClass


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """How failed attempts are retried: decorrelated jitter per class, budgets per class."""

    transient_base_s: float = 0.2
    """Least delay before retrying a transient error (5xx, dropped stream). Short: most blips
    clear within a second, and the jitter grows it threefold per try when they do not."""

    transient_cap_s: float = 30.0
    """Longest jittered delay for transient and timeout errors: beyond half a minute a research
    step is better failed and reported than kept waiting."""

    rate_limited_retries: int = 8
    """Retries of 429s, on a budget of their own and regardless of the task's max_retries: a 429
    means the provider did no work (so a retry is safe even for a non-idempotent handler) and
    it is not the task's fault. Large, because the rate limiter paces the key meanwhile."""

    rate_limited_base_s: float = 1.0
    """Least delay after a 429 that names no Retry-After (Tavily sends none): about the time a
    provider's per-second bucket takes to refill."""

    rate_limited_cap_s: float = 60.0
    """Longest jittered delay after a 429: providers' windows are at most a minute."""

    burst_retries: int = 2
    """Retries of a burst-rate 429 (``limit_burst_rate``): smaller than for other 429s, as
    DeerFlow 2.0 does, because retrying adds to the very ramp the provider complained about."""

    burst_base_s: float = 5.0
    """Least delay after a burst-rate 429 (DeerFlow 2.0's ``burst_retry_base_delay_ms``): the
    provider's slope window has to pass before the rate may rise again."""

    timeout_retries: int = 1
    """Retries of an attempt that overran its timeout (never more than the task's max_retries):
    one more try rides out a slow replica, a second overrun says the task is too big for it."""

    max_retry_after_s: float = 900.0
    """A provider that asks for a longer wait than this (a daily quota's reset) is not retried:
    fifteen minutes is longer than a research job should sit silent."""

    max_attempts: int = 20
    """Attempts of one task across all classes, whatever the budgets say: a hard stop on one
    task bouncing between error classes for ever."""


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a circuit (a rate key, or ``handler:<name>``) opens, and how it recovers."""

    window_s: float = 30.0
    """Sliding window of attempt outcomes the trip rule looks at: long enough to hold a few
    failures of slow LLM calls, short enough to forget yesterday's outage quickly."""

    min_failures: int = 8
    """Counted failures within the window before a circuit may open: a handful of 5xx is noise."""

    min_tasks: int = 3
    """Distinct failing tasks within the window: failures must be correlated across tasks, so
    one poisoned task retrying many times never opens a circuit for everybody."""

    failure_ratio: float = 0.25
    """Share of counted outcomes in the window that failed. A quarter: docs/WORKLOAD.md's brown-out
    (30 % 5xx) should open breakers, while the odd failure among healthy traffic should not."""

    counted: frozenset[ErrorClass] = frozenset({ErrorClass.TRANSIENT, ErrorClass.TIMEOUT})
    """Classes that count as failures. Not RATE_LIMITED (the rate limiter already slows the key
    on a 429), not FATAL or SOFT (the task's own fault, not the provider's health)."""

    open_s: float = 5.0
    """Cool-down of a first trip before one probe is let through."""

    open_factor: float = 2.0
    """Each trip that follows another without a stable spell in between doubles the cool-down."""

    open_max_s: float = 120.0
    """Cap on the cool-down: a provider back after an outage is found within two minutes."""

    stable_s: float = 60.0
    """Closed this long without a trip, a circuit forgets its past trips (cool-down back to
    ``open_s``)."""

    probe_timeout_s: float = 330.0
    """A half-open circuit whose probe has not reported within this lets another probe through
    (the probe's task may have been cancelled or lost). Above the default task timeout plus its
    grace (300 + 5 s), so a slow but live probe is not doubled."""

    max_events: int = 4096
    """Outcomes kept per circuit within the window; older ones drop out early. Bounds memory on
    a hot key while still holding enough for the ratio to mean something."""


@dataclass(frozen=True, slots=True)
class QuarantineConfig:
    """When an agent is taken off a handler because it fails it far more than its peers."""

    window_s: float = 120.0
    """Sliding window of outcomes per handler: long, because the comparison needs peers' attempts
    too and a bad agent is rarely a matter of seconds."""

    min_failures: int = 5
    """Failures of the agent on the handler within the window before it can be judged."""

    min_rate: float = 0.5
    """The agent's failure rate must be at least this: a fifth of failures is not 'broken'."""

    peer_factor: float = 3.0
    """... and at least this many times the peers' pooled failure rate: failing like everyone else
    is the provider's fault, not the agent's."""

    min_peer_attempts: int = 5
    """Pooled attempts of the peers within the window needed for the comparison to mean anything."""

    healthy_peer_attempts: int = 3
    """Attempts a peer needs within the window to count as a healthy peer."""

    healthy_peer_rate: float = 0.2
    """A peer failing at most this share is healthy. At least one healthy, not quarantined peer
    must exist: quarantining never drains a handler from every agent."""

    counted: frozenset[ErrorClass] = frozenset(
        {ErrorClass.TRANSIENT, ErrorClass.TIMEOUT, ErrorClass.FATAL}
    )
    """Classes that count as the agent's failures. FATAL counts because an agent missing an API
    key or a binary fails fatally where its peers do not (a bad payload fails everywhere and the
    peer comparison lets it pass). RATE_LIMITED and SOFT never do: they are the provider's."""

    cooldown_s: float = 60.0
    """How long a first quarantine lasts before the agent gets the handler back on probation."""

    cooldown_factor: float = 2.0
    """A quarantine that follows a failed probation lasts this many times longer."""

    cooldown_max_s: float = 1800.0
    """Cap on a quarantine: half an hour, so a fixed agent is back without an operator."""

    stable_s: float = 600.0
    """Released this long without a new quarantine, an agent's past strikes are forgotten."""


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    """Every knob of the recovery policy, grouped by mechanism."""

    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
