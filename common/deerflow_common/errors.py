"""The error vocabulary both daemons speak: why an attempt or a task failed.

Numeric values equal the wire enum ``deerflow.v1.ErrorKind`` (common.proto), so conversion at
the edges is an int cast."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

AttemptKey = tuple[str, str, int]
"""(job_id, task_id, attempt): names one execution of a task."""


class ErrorKind(IntEnum):
    HANDLER_ERROR = 1
    """The handler raised; retryable unless it said otherwise."""
    UNKNOWN_HANDLER = 2
    DEPENDENCY_FAILED = 3
    TIMEOUT = 4
    AGENT_LOST = 5
    CANCELLED_BY_CLIENT = 6
    FATAL = 7
    """The handler declared the error permanent; never retried."""
    SPLIT_ERROR = 8
    """A splitter or merger raised, or the payload could not be split; names handler and stage."""
    SCHEDULE_TIMEOUT = 9
    """Schedule-to-start expired: no agent started the task in time."""
    HEARTBEAT_TIMEOUT = 10
    """A long task reported no progress within its heartbeat timeout."""
    CIRCUIT_OPEN = 11
    """A circuit breaker stayed open longer than the task could wait."""
    SCHEDULE_TO_CLOSE_TIMEOUT = 12
    """Schedule-to-close expired: over all its attempts the task took too long (not retried)."""
    JOB_DEADLINE_EXCEEDED = 13
    """The job's deadline passed before the task finished (not retried)."""
    RESOURCE_EXHAUSTED = 14
    """The task's output, needed by a dependent, is over the controller's per-task limit or its
    job's budget of outputs kept for dependents (not retried)."""


class ErrorClass(IntEnum):
    """How recovery treats an error (DeerFlow 2.0's classes); values equal
    ``deerflow.v1.ErrorClass``. UNSPECIFIED means: classify from the kind and the signals."""

    UNSPECIFIED = 0
    TRANSIENT = 1
    RATE_LIMITED = 2
    FATAL = 3
    TIMEOUT = 4
    SOFT = 5


@dataclass(frozen=True, slots=True)
class TaskError:
    kind: ErrorKind
    message: str
    """A sentence a person can act on."""
    retryable: bool = False
    retry_after_s: float = 0.0
    """Seconds the provider asked us to wait (Retry-After); 0 when not given."""
    error_class: ErrorClass = ErrorClass.UNSPECIFIED
