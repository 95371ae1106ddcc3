"""An attempt on this agent and how it ended: :class:`Attempt` (as received, and its state
while queued or running), :class:`Outcome`, the errors an attempt ends with, and the
:class:`AttemptObserver` interface that traces and metrics implement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from deerflow_common.errors import AttemptKey, ErrorClass, ErrorKind, TaskError

from ._errors import FatalError, HandlerError
from ._handler import Handler
from ._inputs import InputRef

__all__ = [
    "CANCELLED",
    "NOT_STARTED",
    "Attempt",
    "AttemptError",
    "AttemptObserver",
    "FinishedCallback",
    "Outcome",
    "ProgressCallback",
    "StartedCallback",
    "broken_pool_error",
    "clean_metadata",
    "error_from",
    "metadata_from",
    "outcome_label",
    "timeout_error",
]

_INF = float("inf")

AttemptError = TaskError
"""How an attempt failed (the shared :class:`deerflow_common.errors.TaskError`)."""


@dataclass(slots=True)
class Outcome:
    """How an attempt ended. Times are Unix seconds. ``cancelled`` is set when the controller
    cancelled the attempt, whatever the handler did afterwards."""

    key: AttemptKey
    handler: str
    ok: bool
    output: bytes
    error: AttemptError | None
    started_at: float
    finished_at: float
    cancelled: bool = False
    metadata: Mapping[str, str] | None = None
    cpu_s: float = 0.0
    """CPU seconds the handler used: measured in the pool worker for cpu handlers; 0 (unknown)
    for io handlers, whose CPU time is spread over a loop shared with every other attempt."""
    rss_bytes: int = 0
    """Peak resident memory of the cpu worker that ran the attempt (a high-water mark over the
    worker's life, so an upper bound); 0 (unknown) for io handlers."""


class Attempt:
    """One assignment as received, and its state on this agent while it is queued or running."""

    __slots__ = (
        "cancel_requested",
        "deadline",
        "handler",
        "inputs",
        "key",
        "payload",
        "seq",
        "span",
        "started_at",
        "task",
        "timed_out",
        "timeout_s",
        "trace_context",
    )

    def __init__(
        self,
        key: AttemptKey,
        handler: str,
        payload: bytes,
        timeout_s: float = 0.0,
        trace_context: Mapping[str, str] | None = None,
        inputs: tuple[InputRef, ...] = (),
    ) -> None:
        self.key = key
        self.handler = handler
        self.payload = payload
        self.timeout_s = timeout_s
        """Start-to-close limit in seconds; 0 or less means none."""
        self.trace_context = trace_context
        self.inputs = inputs
        """The dependencies' outputs the task asked for, inline or to fetch (see ``_inputs``)."""
        self.span: object = None
        """What an :class:`AttemptObserver` keeps about this attempt (its span), if anything."""
        self.seq = 0
        self.started_at = 0.0
        self.task: asyncio.Task[None] | None = None
        self.deadline = _INF  # event-loop time, set when an io attempt with a timeout starts
        self.cancel_requested = False
        self.timed_out = False

    def __repr__(self) -> str:
        job, task, n = self.key
        return f"Attempt({job}/{task}#{n}, {self.handler!r})"


CANCELLED = AttemptError(
    ErrorKind.CANCELLED_BY_CLIENT, "cancelled by the controller while running", retryable=False
)
NOT_STARTED = AttemptError(
    ErrorKind.CANCELLED_BY_CLIENT, "cancelled by the controller before it started", retryable=False
)

StartedCallback = Callable[[AttemptKey, float], None]
FinishedCallback = Callable[[Outcome], None]
ProgressCallback = Callable[[AttemptKey, float, str], None]


class AttemptObserver(Protocol):
    """Cross-cutting concerns (traces, metrics) around each attempt's run.

    ``on_start`` is called just before the handler is started. ``child_context`` gives the
    trace context an io handler's ``TaskContext.trace_context`` shows, and is called only if
    the handler reads it (so a tracer names its span there without paying for it on every
    attempt). ``on_end`` is called when the attempt's outcome is reported, for attempts that
    started. All run synchronously on the loop, must be short and must not raise."""

    def on_start(self, a: Attempt) -> None: ...

    def child_context(self, a: Attempt) -> Mapping[str, str] | None: ...

    def on_end(self, a: Attempt, outcome: Outcome) -> None: ...


def outcome_label(outcome: Outcome) -> str:
    """How an attempt ended, as metrics and spans name it: succeeded, cancelled, or the error's
    kind in lower case."""
    if outcome.ok:
        return "succeeded"
    if outcome.cancelled:
        return "cancelled"
    return outcome.error.kind.name.lower() if outcome.error is not None else "failed"


def timeout_error(name: str, timeout_s: float) -> AttemptError:
    return AttemptError(
        ErrorKind.TIMEOUT,
        f"handler {name!r} did not finish within its start-to-close timeout of {timeout_s:.3g} s",
        retryable=True,
        error_class=ErrorClass.TIMEOUT,
    )


def broken_pool_error(name: str, exc: BaseException) -> AttemptError:
    return AttemptError(
        ErrorKind.HANDLER_ERROR,
        f"the process pool running cpu handler {name!r} broke ({exc}); a worker probably died "
        "(out of memory?); the pool is restarted for the next attempt",
        retryable=True,
        error_class=ErrorClass.TRANSIENT,
    )


def metadata_from(exc: Exception) -> dict[str, str] | None:
    """The provider signals a failed handler attached to its HandlerError or FatalError."""
    if isinstance(exc, HandlerError | FatalError) and exc.metadata:
        return clean_metadata(exc.metadata)
    return None


def clean_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    # The wire map takes strings only; one handler's stray int must not break the stream.
    return {str(k): v if isinstance(v, str) else str(v) for k, v in metadata.items()}


def error_from(h: Handler, exc: Exception) -> AttemptError:
    """Map what a handler raised to the error reported for the attempt."""
    if isinstance(exc, FatalError):
        return AttemptError(
            ErrorKind.FATAL, exc.message, retryable=False, error_class=exc.error_class
        )
    if isinstance(exc, HandlerError):
        kind = ErrorKind.HANDLER_ERROR if exc.retryable else ErrorKind.FATAL
        return AttemptError(kind, exc.message, exc.retryable, exc.retry_after_s, exc.error_class)
    return AttemptError(
        ErrorKind.HANDLER_ERROR,
        f"handler {h.name!r} raised {type(exc).__name__}: {exc}",
        retryable=True,
    )
