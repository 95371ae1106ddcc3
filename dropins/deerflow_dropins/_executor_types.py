"""The executor drop-in's data: the fork's ``TaskPriority``, ``TaskStatus``, ``TaskResult`` and
``ParallelTask``, and the :class:`ClusterCallable` protocol that makes a task a cluster task."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ClusterCall",
    "ClusterCallable",
    "DependencyFailedError",
    "ParallelTask",
    "TaskPriority",
    "TaskResult",
    "TaskStatus",
    "cluster_task",
    "decode_output",
]


def decode_output(output: bytes) -> Any:
    """A cluster task's output as the task's ``result``: decoded JSON when it is JSON, else the
    UTF-8 text, else the bytes."""
    try:
        return json.loads(output)
    except ValueError:
        pass
    try:
        return output.decode()
    except UnicodeDecodeError:
        return output


@dataclass(frozen=True)
class ClusterCall:
    """What one call becomes on the cluster: the installed ``handler`` to run, its ``payload``
    (data: bytes, str, or JSON-encodable values; never code), the cluster-wide budgets it draws
    on (``rate_keys``, ``est_tokens``) and its cache policy. ``decode`` turns the task's output
    bytes back into the call's result; it runs here, in the calling process."""

    handler: str
    payload: object = b""
    rate_keys: Sequence[str] = ()
    est_tokens: float = 0.0
    cache: str = "default"
    decode: Callable[[bytes], Any] = decode_output

    def __post_init__(self) -> None:
        if not isinstance(self.handler, str) or not self.handler.strip():
            raise ValueError(f"a cluster call needs a handler name, got {self.handler!r}")
        if isinstance(self.rate_keys, str):
            raise TypeError("rate_keys must be a sequence of key names, not one str")
        tokens = self.est_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int | float):
            raise TypeError(f"est_tokens must be a number, got {tokens!r}")
        if not math.isfinite(tokens) or tokens < 0:
            raise ValueError(f"est_tokens must be a finite number >= 0, got {tokens!r}")


@runtime_checkable
class ClusterCallable(Protocol):
    """A ``ParallelTask.func`` that runs on the cluster instead of in this process.

    ``to_task(args, kwargs)`` receives the task's ``args`` and ``kwargs`` and returns the
    :class:`ClusterCall` to submit; it runs in the calling process and must not block. Raise
    ValueError or TypeError for arguments that cannot become a payload: that task then fails
    with the error and the others run. The drop-in LangChain tools and chat model implement it;
    :func:`cluster_task` makes one for any installed handler."""

    def to_task(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> ClusterCall: ...


class _HandlerCall:
    """A reference to an installed handler, made by :func:`cluster_task`."""

    def __init__(
        self,
        handler: str,
        rate_keys: Sequence[str],
        est_tokens: float,
        cache: str,
        decode: Callable[[bytes], Any],
    ) -> None:
        self._template = ClusterCall(handler, b"", tuple(rate_keys), est_tokens, cache, decode)

    def to_task(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> ClusterCall:
        handler = self._template.handler
        if args and kwargs:
            raise TypeError(
                f"cluster_task({handler!r}) takes its payload as one positional argument or as "
                "keyword arguments, not both"
            )
        if len(args) > 1:
            raise TypeError(
                f"cluster_task({handler!r}) takes one positional argument (the payload), "
                f"got {len(args)}"
            )
        payload: object = args[0] if args else dict(kwargs)
        t = self._template
        return ClusterCall(handler, payload, t.rate_keys, t.est_tokens, t.cache, t.decode)

    def __repr__(self) -> str:
        return f"cluster_task({self._template.handler!r})"


def cluster_task(
    handler: str,
    *,
    rate_keys: Sequence[str] = (),
    est_tokens: float = 0.0,
    cache: str = "default",
    decode: Callable[[bytes], Any] = decode_output,
) -> ClusterCallable:
    """A ``ParallelTask.func`` that runs the installed ``handler`` on the cluster.

    The task's payload is its one positional argument, or its keyword arguments as a JSON
    object: ``ParallelTask("q1", cluster_task("search"), kwargs={"query": "..."})``. The
    result is the handler's output through ``decode`` (:func:`decode_output`: JSON, else text,
    else bytes)."""
    return _HandlerCall(handler, rate_keys, est_tokens, cache, decode)


class DependencyFailedError(Exception):
    """A task did not run because one of its dependencies did not complete."""

    def __init__(self, task_id: str, dependency: str, cause: BaseException | None) -> None:
        reason = f": {cause}" if cause is not None else ""
        super().__init__(
            f"task {task_id!r} did not run: its dependency {dependency!r} did not complete{reason}"
        )
        self.task_id = task_id
        self.dependency = dependency
        self.cause = cause


class TaskPriority(Enum):
    """The fork's priorities; the value is the cluster task's priority (higher runs first)."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


class TaskStatus(Enum):
    """The fork's statuses. A finished task is COMPLETED or FAILED (timeouts, cancellation and
    failed dependencies included, with the reason in ``TaskResult.error``)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RATE_LIMITED = "rate_limited"
    RETRYING = "retrying"


@dataclass
class TaskResult:
    """What :meth:`ParallelExecutor.execute_all` returns per task, as in the fork.

    ``execution_time`` (s) runs from when the task was started or submitted to its outcome,
    retries and waits included. ``retry_count`` is the number of attempts after the first.
    ``rate_limit_delays`` counts the times the cluster's limiter held the task back (THROTTLED)
    and ``total_delay_time`` (s) adds those waits to the pauses before retries."""

    task_id: str
    status: TaskStatus
    result: Any = None
    error: Exception | None = None
    execution_time: float = 0.0
    retry_count: int = 0
    rate_limit_delays: int = 0
    total_delay_time: float = 0.0


@dataclass
class ParallelTask:
    """One unit of work, as in the fork: ``func(*args, **kwargs)``.

    ``timeout`` (s, None = none locally, the controller's default on the cluster) bounds one
    attempt; ``max_retries`` counts attempts after the first; ``dependencies`` are task ids
    that must complete first. See the module docstring for where ``func`` runs."""

    task_id: str
    func: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    priority: TaskPriority = TaskPriority.NORMAL
    max_retries: int = 3
    timeout: float | None = None
    dependencies: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kwargs is None:
            self.kwargs = {}
        if self.dependencies is None:
            self.dependencies = []
        if not isinstance(self.task_id, str) or not self.task_id:
            raise ValueError(f"ParallelTask needs a non-empty str task_id, got {self.task_id!r}")
        if not callable(self.func) and not isinstance(self.func, ClusterCallable):
            raise TypeError(
                f"task {self.task_id!r}: func must be callable or a cluster call "
                f"(cluster_task('name')), got {type(self.func).__name__}"
            )
        if not isinstance(self.priority, TaskPriority):
            raise TypeError(
                f"task {self.task_id!r}: priority must be a TaskPriority, got {self.priority!r}"
            )
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError(f"task {self.task_id!r}: max_retries must be an int")
        if not 0 <= self.max_retries <= 100:
            raise ValueError(
                f"task {self.task_id!r}: max_retries must be 0 to 100, got {self.max_retries}"
            )
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(
                f"task {self.task_id!r}: timeout must be None or seconds > 0, got {timeout!r}"
            )

    @property
    def on_cluster(self) -> bool:
        """True when ``func`` is a cluster call (runs as a cluster task)."""
        return isinstance(self.func, ClusterCallable)
