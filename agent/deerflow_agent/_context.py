"""What an io handler knows about the attempt it runs: :class:`TaskContext` (ids, deadline,
trace context, its dependencies' outputs, a logger, progress reports)."""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from deerflow_common.errors import AttemptKey

from ._inputs import NO_INPUTS, Inputs
from ._netpolicy import STRICT, AddressPolicy
from ._redact import environment_secrets, payload_secrets, redact

__all__ = ["PROGRESS_MESSAGE_CHARS", "ProgressSink", "TaskContext"]


class _TaskLogAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes ``job/task#attempt`` and masks the payload's secrets (and the agent's provider
    keys) in the formatted line, tracebacks included: handlers may log what they were given."""

    def __init__(self, logger: logging.Logger, ref: str, secrets: tuple[str, ...]) -> None:
        super().__init__(logger, {"ref": ref})
        self._ref = ref
        self._secrets = secrets

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self._ref}] {msg}", kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        secrets = self._secrets + environment_secrets()
        if not secrets:
            super().log(level, msg, *args, **kwargs)
            return
        text = str(msg) % args if args else str(msg)
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "[%s] %s", self._ref, redact(text, secrets), **kwargs)


PROGRESS_MESSAGE_CHARS = 256
"""Longest progress message sent; longer ones are cut (progress is a sign of life, not a log)."""


class ProgressSink(Protocol):
    """Where :meth:`TaskContext.progress` reports go: the agent's runtime (which rate-limits them
    per attempt and hands them to the stream) or a test environment (which records them)."""

    def report_progress(self, key: AttemptKey, fraction: float, message: str) -> None: ...


class TaskContext:
    """What an io handler knows about the attempt it runs.

    ``deadline`` is in event-loop time (``asyncio.get_running_loop().time()``), ``inf`` when the
    attempt has no start-to-close timeout; the agent cancels the handler when it passes.
    """

    __slots__ = (
        "_child_context",
        "_child_of",
        "_logger",
        "_payload",
        "_sink",
        "_trace_context",
        "address_policy",
        "attempt",
        "deadline",
        "handler",
        "inputs",
        "job_id",
        "task_id",
    )

    def __init__(
        self,
        job_id: str,
        task_id: str,
        attempt: int,
        deadline: float,
        handler: str = "",
        trace_context: Mapping[str, str] | None = None,
        progress_sink: ProgressSink | None = None,
        *,
        child_context: Callable[[Any], Mapping[str, str] | None] | None = None,
        child_of: object = None,
        inputs: Inputs = NO_INPUTS,
        address_policy: AddressPolicy = STRICT,
        payload: bytes = b"",
    ) -> None:
        """``child_context``, when given, makes :attr:`trace_context` on first read instead, as
        ``child_context(child_of)`` (the agent's tracing names its execute span there only for
        handlers that ask, and passes its method and the attempt: no closure per attempt)."""
        self.job_id = job_id
        self.task_id = task_id
        self.attempt = attempt
        self.deadline = deadline
        self.handler = handler
        self._trace_context = trace_context
        self._child_context = child_context
        self._child_of = child_of
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._payload = payload  # only for masking its secrets in log lines
        self._sink = progress_sink
        self.inputs = inputs
        """The outputs of the dependencies the task asked for (``Task(inputs=...)``): a
        read-only mapping of task id to bytes in ``depends_on`` order, with ``.json(id)`` and
        ``.text(id)``; empty when it asked for none. Fetched before the handler is called."""
        self.address_policy = address_policy
        """Which addresses a URL from the payload may lead to (the agent's ``--http-allow``):
        fetch such URLs with ``deerflow_agent._http.guarded_client(ctx.address_policy)``."""

    @property
    def trace_context(self) -> Mapping[str, str]:
        """W3C trace context (``traceparent``, maybe ``tracestate``) of the span this attempt
        runs in: pass it on (an HTTP ``traceparent`` header) or parent your own spans on it.
        Empty when the attempt is not traced."""
        tc = self._trace_context
        if tc is None:
            make = self._child_context
            tc = self._trace_context = (make(self._child_of) if make is not None else None) or {}
        return tc

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named after the handler whose lines carry ``job/task#attempt``; the
        payload's secret fields (``api_key``, ``authorization``...) are masked in them."""
        if self._logger is None:
            base = logging.getLogger(f"deerflow_agent.handler.{self.handler or 'anonymous'}")
            ref = f"{self.job_id}/{self.task_id}#{self.attempt}"
            self._logger = _TaskLogAdapter(base, ref, payload_secrets(self._payload))
        return self._logger

    def time_left(self) -> float:
        """Seconds until the deadline (``inf`` without one); call it from the event loop."""
        return self.deadline - asyncio.get_running_loop().time()

    def progress(self, fraction: float | None = None, message: str = "") -> None:
        """Report that a long task is alive and how far it got (``fraction`` 0.0-1.0, None when
        unknown; values outside are clamped), with an optional short message.

        Each report resets the task's heartbeat timeout in the controller: a task submitted with
        ``heartbeat_timeout_s`` must report at least that often or it is failed with
        HEARTBEAT_TIMEOUT. Never blocks and never raises; cheap to call in a loop: the agent
        sends at most one Progress per attempt per 0.5 s (the latest report wins) and batches
        them per event-loop turn. Call it from the event loop. CPU handlers cannot call it (they
        get no context in the process pool): give long cpu work a start-to-close timeout, or
        split it into items, instead of a heartbeat timeout."""
        sink = self._sink
        if sink is None:
            return
        if fraction is None or fraction != fraction:  # NaN counts as unknown
            value = -1.0
        else:
            value = min(1.0, max(0.0, float(fraction)))
        text = (
            message if len(message) <= PROGRESS_MESSAGE_CHARS else message[:PROGRESS_MESSAGE_CHARS]
        )
        sink.report_progress((self.job_id, self.task_id, self.attempt), value, text)

    def __repr__(self) -> str:
        return f"TaskContext({self.job_id}/{self.task_id}#{self.attempt}, handler={self.handler!r})"
