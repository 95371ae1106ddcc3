"""The handler plugin interface: what a handler is, how it is called, and how it reports errors.

A handler is a function registered under a name that the controller puts in assignments. The
agent calls it with the task's payload (opaque bytes: data, never code) and sends back the bytes it
returns.

Two kinds, two calling conventions:

- **io** (the default): ``async def fn(ctx: TaskContext, payload: bytes) -> bytes | HandlerResult``,
  run as one asyncio task on the agent's event loop. It must not block the loop: use async
  clients, or ``asyncio.to_thread`` for the odd blocking call.
- **cpu**: ``def fn(payload: bytes) -> bytes | HandlerResult``, run in the agent's process pool. It
  must be defined at module level (the pool imports it by name in a worker process), and its
  output and exceptions must be picklable.

Execution is **at-least-once**: an attempt may be cut short by a timeout, a lost agent or a
controller failover and the task then runs again, possibly on another agent, possibly while the
first run is still going. Handlers with side effects must be idempotent; ``(job_id, task_id)``
from the :class:`TaskContext` is the idempotency key.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, overload

__all__ = [
    "CpuHandlerFn",
    "FatalError",
    "Handler",
    "HandlerError",
    "HandlerKind",
    "HandlerResult",
    "IoHandlerFn",
    "TaskContext",
    "handler",
]


class HandlerKind(enum.Enum):
    """Where a handler runs."""

    IO = "io"
    """On the agent's event loop, as an asyncio task: network calls, subprocess waits."""

    CPU = "cpu"
    """In the agent's process pool: hashing, parsing, numeric work that would block the loop."""


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """A richer return value than plain bytes.

    ``metadata`` carries small string facts about the run (HTTP status, rate-limit headers, token
    usage; keys from :mod:`deerflow_common.signals`) to ``Result.metadata``, for the controller's
    rate limiter and stats; ``output`` is what the task returns.
    """

    output: bytes
    metadata: dict[str, str] = field(default_factory=dict)


class HandlerError(Exception):
    """The attempt failed but the task may succeed if tried again (a 503, a reset connection).

    ``retry_after_s`` is how long the provider asked us to wait (a Retry-After header), 0 when it
    said nothing; the controller never retries sooner. ``retryable=False`` makes it permanent,
    like :class:`FatalError`. ``metadata`` carries the provider's signals for the failed attempt
    (keys from :mod:`deerflow_common.signals`: HTTP status, rate-limit headers, error code) into
    ``Result.metadata``, so the controller's limiter learns from a 429 as it does from a 200.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float = 0.0,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = max(0.0, float(retry_after_s))
        self.metadata: dict[str, str] = dict(metadata or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # CPU handlers raise this in a pool worker: keep the keyword arguments across pickling.
        return (
            _rebuild_handler_error,
            (self.message, self.retryable, self.retry_after_s, self.metadata),
        )


def _rebuild_handler_error(
    message: str, retryable: bool, retry_after_s: float, metadata: dict[str, str] | None = None
) -> HandlerError:
    return HandlerError(
        message, retryable=retryable, retry_after_s=retry_after_s, metadata=metadata
    )


class FatalError(Exception):
    """The task cannot succeed however often it is tried (bad input, 404, a rejected API key):
    never retried. ``metadata`` is reported with the failure, as for :class:`HandlerError`."""

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_fatal_error, (self.message, self.metadata))


def _rebuild_fatal_error(message: str, metadata: dict[str, str] | None = None) -> FatalError:
    return FatalError(message, metadata=metadata)


class _TaskLogAdapter(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self.extra['ref'] if self.extra else ''}] {msg}", kwargs


class TaskContext:
    """What an io handler knows about the attempt it runs.

    ``deadline`` is in event-loop time (``asyncio.get_running_loop().time()``), ``inf`` when the
    attempt has no start-to-close timeout; the agent cancels the handler when it passes.
    """

    __slots__ = ("_logger", "attempt", "deadline", "handler", "job_id", "task_id", "trace_context")

    def __init__(
        self,
        job_id: str,
        task_id: str,
        attempt: int,
        deadline: float,
        handler: str = "",
        trace_context: Mapping[str, str] | None = None,
    ) -> None:
        self.job_id = job_id
        self.task_id = task_id
        self.attempt = attempt
        self.deadline = deadline
        self.handler = handler
        self.trace_context: Mapping[str, str] = trace_context or {}
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named after the handler whose lines carry ``job/task#attempt``."""
        if self._logger is None:
            base = logging.getLogger(f"deerflow_agent.handler.{self.handler or 'anonymous'}")
            ref = f"{self.job_id}/{self.task_id}#{self.attempt}"
            self._logger = _TaskLogAdapter(base, {"ref": ref})
        return self._logger

    def time_left(self) -> float:
        """Seconds until the deadline (``inf`` without one); call it from the event loop."""
        return self.deadline - asyncio.get_running_loop().time()

    def progress(self, fraction: float | None = None, message: str = "") -> None:
        """Report progress of a long task (0.0-1.0). A no-op for now: the wire contract has no
        progress message yet. Cheap to call; handlers may call it freely."""

    def __repr__(self) -> str:
        return f"TaskContext({self.job_id}/{self.task_id}#{self.attempt}, handler={self.handler!r})"


IoHandlerFn: TypeAlias = Callable[[TaskContext, bytes], Awaitable["bytes | HandlerResult"]]
CpuHandlerFn: TypeAlias = Callable[[bytes], "bytes | HandlerResult"]


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
    )


@dataclass(frozen=True, slots=True)
class Handler:
    """A named, installed handler. Build one with :func:`handler` or directly.

    ``slots`` caps concurrent attempts of this handler on one agent (0 = the agent's total; cpu
    handlers are further capped by the process pool size). Execution is at-least-once: handlers
    with side effects must be idempotent. Payloads are data, never code.
    """

    name: str
    fn: IoHandlerFn | CpuHandlerFn
    kind: HandlerKind = HandlerKind.IO
    slots: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise ValueError(f"handler name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.kind, HandlerKind):
            raise TypeError(f"handler {self.name!r}: kind must be a HandlerKind, got {self.kind!r}")
        if not isinstance(self.slots, int) or self.slots < 0:
            raise ValueError(
                f"handler {self.name!r}: slots must be an int >= 0, got {self.slots!r}"
            )
        if not callable(self.fn):
            raise TypeError(f"handler {self.name!r}: fn must be callable, got {self.fn!r}")
        is_async = _is_async_callable(self.fn)
        if self.kind is HandlerKind.IO and not is_async:
            raise TypeError(
                f"io handler {self.name!r} must be an async function "
                "`async def fn(ctx, payload) -> bytes`; for blocking work use kind='cpu'"
            )
        if self.kind is HandlerKind.CPU and is_async:
            raise TypeError(
                f"cpu handler {self.name!r} must be a plain function `def fn(payload) -> bytes`; "
                "async functions run as kind='io'"
            )


_Fn = Callable[..., Any]


@overload
def handler(name: _Fn, /) -> Handler: ...


@overload
def handler(
    name: str | None = None,
    *,
    kind: HandlerKind | Literal["io", "cpu"] = "io",
    slots: int = 0,
    description: str = "",
) -> Callable[[_Fn], Handler]: ...


def handler(
    name: str | _Fn | None = None,
    *,
    kind: HandlerKind | Literal["io", "cpu"] = "io",
    slots: int = 0,
    description: str = "",
) -> Handler | Callable[[_Fn], Handler]:
    """Turn a function into a :class:`Handler`; usable bare (``@handler``) or with arguments.

    The name defaults to the function's name and the description to its docstring's first line.
    A cpu handler decorated in place (``@handler(kind="cpu") def f(payload)``) still works in the
    process pool: the worker imports the module attribute and takes the function out of it.
    Execution is at-least-once, so handlers with side effects must be idempotent.
    """
    try:
        chosen = kind if isinstance(kind, HandlerKind) else HandlerKind(kind)
    except ValueError:
        raise ValueError(f"handler kind must be 'io' or 'cpu', got {kind!r}") from None

    def wrap(fn: _Fn, name: str | None = None) -> Handler:
        doc = inspect.getdoc(fn) or ""
        return Handler(
            name=name or fn.__name__,
            fn=fn,
            kind=chosen,
            slots=slots,
            description=description or (doc.splitlines()[0] if doc else ""),
        )

    if callable(name):
        return wrap(name)
    return lambda fn: wrap(fn, name)


# ------------------------------------------------------------------------- shared by runners


def coerce_output(name: str, value: object) -> HandlerResult:
    """Check a handler's return value; anything but bytes or a HandlerResult is a bug in the
    handler, which no retry fixes, so it is reported as a FatalError."""
    if isinstance(value, bytes):
        return HandlerResult(value)
    if isinstance(value, HandlerResult) and isinstance(value.output, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return HandlerResult(bytes(value))
    raise FatalError(
        f"handler {name!r} returned {type(value).__name__}; "
        "handlers must return bytes or HandlerResult (encode text with .encode())"
    )


def cpu_target(h: Handler) -> tuple[str, str]:
    """The (module, qualified name) a pool worker imports to find a cpu handler's function.

    Raises TypeError when the function is not reachable at module level, since the pool could
    not import it (lambdas, nested functions, methods of instances)."""
    fn = h.fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(
            f"cpu handler {h.name!r}: its function must be defined at module level so the "
            f"process pool can import it (got {fn!r})"
        )
    try:
        found = _resolve(module, qualname)
    except (ImportError, AttributeError) as exc:
        raise TypeError(
            f"cpu handler {h.name!r}: the process pool could not find {module}:{qualname} ({exc})"
        ) from None
    if found is not fn:
        raise TypeError(
            f"cpu handler {h.name!r}: {module}:{qualname} is not its function; define the "
            "function at module level under its own name"
        )
    return module, qualname


_resolved: dict[tuple[str, str], CpuHandlerFn] = {}


def _resolve(module: str, qualname: str) -> object:
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj.fn if isinstance(obj, Handler) else obj


def call_cpu_handler(module: str, qualname: str, payload: bytes) -> bytes | HandlerResult:
    """Entry point of a pool worker: import the cpu handler's function by name (once per worker)
    and call it. Only names and the payload's bytes cross the process boundary."""
    key = (module, qualname)
    fn = _resolved.get(key)
    if fn is None:
        found = _resolve(module, qualname)
        if not callable(found):
            raise TypeError(f"{module}:{qualname} is not callable")
        fn = _resolved[key] = found
    return fn(payload)
