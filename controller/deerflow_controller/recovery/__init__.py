"""Error recovery of the scheduling core: classification, retries, circuit breakers, quarantine.

Pure policy, no I/O and no clock: the scheduler passes ``now`` and its seeded ``random.Random``
and turns each decision into an event whose reason a client can read.
"""

from deerflow_controller.recovery.breaker import (
    CircuitBreakers,
    CircuitSnapshot,
    CircuitState,
    CircuitTransition,
    handler_key,
)
from deerflow_controller.recovery.classify import (
    about_the_provider,
    classify,
    describe,
    http_status,
    is_burst_rate,
)
from deerflow_controller.recovery.config import (
    BreakerConfig,
    QuarantineConfig,
    RecoveryConfig,
    RetryConfig,
)
from deerflow_controller.recovery.quarantine import (
    AgentQuarantine,
    QuarantineAction,
    QuarantineDecision,
)
from deerflow_controller.recovery.retry import Budget, RetryDecision, RetryPolicy, RetryState

__all__ = [  # noqa: RUF022 - grouped by mechanism
    # classification (DeerFlow 2.0's error classes)
    "about_the_provider",
    "classify",
    "describe",
    "http_status",
    "is_burst_rate",
    # retries
    "Budget",
    "RetryDecision",
    "RetryPolicy",
    "RetryState",
    # circuit breakers
    "CircuitBreakers",
    "CircuitSnapshot",
    "CircuitState",
    "CircuitTransition",
    "handler_key",
    # quarantine of agents per handler
    "AgentQuarantine",
    "QuarantineAction",
    "QuarantineDecision",
    # configuration
    "BreakerConfig",
    "QuarantineConfig",
    "RecoveryConfig",
    "RetryConfig",
]
