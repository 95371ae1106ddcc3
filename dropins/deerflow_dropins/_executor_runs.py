"""How the executor drop-in runs tasks: local callables with timeouts and retries, and the
watch of a cluster job that turns its events into ``TaskResult`` s."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from deerflow_common.backoff import CENTRED_JITTER, Backoff
from deerflow_dropins._executor_types import (
    DependencyFailedError,
    ParallelTask,
    TaskResult,
    TaskStatus,
)

if TYPE_CHECKING:
    from deerflow_controller.client import AsyncClient, TaskEvent

__all__ = ["is_transient", "run_local", "watch_job"]

logger = logging.getLogger(__name__)

RETRY_CAP_S = 30.0
"""Longest pause before a local retry (the pauses double from the executor's first one)."""

_FATAL = re.compile(
    r"\b(401|403|unauthori[sz]ed|forbidden|authentication|invalid[ _]api[ _]key|quota|billing|"
    r"insufficient[ _]balance|model[ _]not[ _]found|bad request|400)\b",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"(rate[ _]?limit|too many requests|\b429\b|\b5\d\d\b|timed? ?out|timeout|connection|"
    r"unavailable|overloaded|resource[ _]exhausted|temporar)",
    re.IGNORECASE,
)


def is_transient(error: BaseException) -> bool:
    """Whether a local attempt's error may go away if tried again: timeouts and connection
    errors, and messages that say rate limit, 429, 5xx, unavailable, overloaded; never one that
    says authentication, quota, billing, model not found or bad request. Anything else is a bug
    or a bad input, which a retry does not fix (the fork draws the same line)."""
    text = str(error)
    if _FATAL.search(text):
        return False
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    return bool(_TRANSIENT.search(text))


async def _call(task: ParallelTask) -> Any:
    func = task.func
    kwargs = task.kwargs or {}
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async callable objects count too
    ):
        value = await func(*task.args, **kwargs)
    else:
        # A blocking callable runs in a thread; a timeout stops waiting for it but cannot stop
        # the thread (Python has no way to), so it runs on to its end unobserved.
        value = await asyncio.to_thread(func, *task.args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


async def run_local(task: ParallelTask, backoff_s: float) -> TaskResult:
    """Run ``task.func`` here: each attempt bounded by ``task.timeout``; transient failures
    (:func:`is_transient`, attempt timeouts included) retried up to ``task.max_retries`` after
    a jittered pause that doubles from ``backoff_s``. Never raises but CancelledError."""
    started = time.monotonic()
    backoff = Backoff(backoff_s, max(backoff_s, RETRY_CAP_S), jitter=CENTRED_JITTER)
    waited = 0.0
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(task.timeout):
                value = await _call(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error: Exception = exc
            if isinstance(exc, TimeoutError) and task.timeout is not None:
                error = TimeoutError(
                    f"task {task.task_id!r}: attempt {attempt + 1} timed out after "
                    f"{task.timeout:g} s"
                )
            if attempt < task.max_retries and is_transient(error):
                pause = backoff.delay()
                logger.info("task %r failed (%s); retrying in %.2f s", task.task_id, error, pause)
                await asyncio.sleep(pause)  # a retry's pause, not a synchronisation
                waited += pause
                attempt += 1
                continue
            return TaskResult(
                task.task_id,
                TaskStatus.FAILED,
                error=error,
                execution_time=time.monotonic() - started,
                retry_count=attempt,
                total_delay_time=waited,
            )
        return TaskResult(
            task.task_id,
            TaskStatus.COMPLETED,
            result=value,
            execution_time=time.monotonic() - started,
            retry_count=attempt,
            total_delay_time=waited,
        )


class _TaskWatch:
    """What one cluster task's events add up to before its terminal one."""

    __slots__ = ("delayed_s", "since", "state", "throttled")

    def __init__(self) -> None:
        self.state = ""
        self.since = 0.0
        self.throttled = 0
        self.delayed_s = 0.0

    def seen(self, state: str, now: float) -> None:
        if self.state in ("THROTTLED", "RETRYING"):
            self.delayed_s += now - self.since
        if state == "THROTTLED" and self.state != "THROTTLED":
            self.throttled += 1
        self.state = state
        self.since = now


async def watch_job(
    client: AsyncClient,
    job_id: str,
    decoders: Mapping[str, Callable[[bytes], Any]],
    deps: Mapping[str, Sequence[str]],
    started: float,
    outcomes: asyncio.Queue[TaskResult],
) -> None:
    """Follow ``job_id``'s events until each of ``decoders``' tasks has a result, and put each
    result on ``outcomes`` as it arrives. If the stream fails for good, the tasks without a
    result fail with its error."""
    watches = {task_id: _TaskWatch() for task_id in decoders}
    results: dict[str, TaskResult] = {}
    try:
        async for ev in client.events(job_id):
            watch = watches.get(ev.task_id)
            if watch is None or ev.task_id in results:
                continue
            now = time.monotonic()
            watch.seen(ev.state, now)
            if ev.terminal:
                result = _result(ev, watch, decoders[ev.task_id], deps, results, now - started)
                results[ev.task_id] = result
                outcomes.put_nowait(result)
                if len(results) == len(watches):
                    return
        failure: Exception = RuntimeError(
            f"job {job_id} ended without a result for this task; see `deerflow job {job_id}`"
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the controller stayed unreachable past the client's retries
        failure = exc
    for task_id in watches.keys() - results.keys():
        outcomes.put_nowait(TaskResult(task_id, TaskStatus.FAILED, error=failure))


def _result(
    ev: TaskEvent,
    watch: _TaskWatch,
    decode: Callable[[bytes], Any],
    deps: Mapping[str, Sequence[str]],
    done: Mapping[str, TaskResult],
    elapsed: float,
) -> TaskResult:
    result = TaskResult(
        ev.task_id,
        TaskStatus.FAILED,
        execution_time=elapsed,
        retry_count=max(0, ev.attempt - 1),
        rate_limit_delays=watch.throttled,
        total_delay_time=watch.delayed_s,
    )
    if ev.state == "SUCCEEDED":
        try:
            result.result = decode(ev.output)
        except Exception as exc:  # the caller's decode refused the output
            result.error = exc
        else:
            result.status = TaskStatus.COMPLETED
        return result
    if ev.state == "TIMED_OUT":
        result.error = TimeoutError(f"task {ev.task_id!r} timed out on the cluster: {ev.error}")
        return result
    from deerflow_controller.client import TaskFailedError

    cause = TaskFailedError(ev.job_id, ev.task_id, ev.state, ev.error_kind, ev.error)
    if ev.error_kind == "DEPENDENCY_FAILED":
        task_deps = deps.get(ev.task_id, ())
        failed = [d for d in task_deps if d in done and done[d].status is not TaskStatus.COMPLETED]
        dep = failed[0] if failed else (task_deps[0] if task_deps else "?")
        dep_error = done[dep].error if dep in done else cause
        result.error = DependencyFailedError(ev.task_id, dep, dep_error)
    else:
        result.error = cause
    return result
