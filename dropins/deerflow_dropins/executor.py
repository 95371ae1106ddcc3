"""A drop-in for the smart-deer-flow fork's ``ParallelExecutor``: same names, same shapes, the
work runs on a deerflow-parallel cluster.

The fork's import ``from src.utils.performance.parallel_executor import ...`` becomes
``from deerflow_dropins.executor import ...``; nothing else in its callers changes::

    executor = create_parallel_executor(max_concurrent_tasks=3)
    executor.add_tasks([ParallelTask(task_id=step.title, func=run_step, args=(state, step))])
    results = await executor.execute_all()          # task_id -> TaskResult
    results[step.title].status.value == "completed"

A task's ``func`` decides where it runs:

- a **cluster call** (:func:`cluster_task` ``("search")``, or any object with a ``to_task(args,
  kwargs) -> ClusterCall`` method: the :class:`ClusterCallable` protocol, which the drop-in
  LangChain tools implement) runs as a task of a job on the cluster. Its payload is data built
  from the task's ``args``/``kwargs``; nothing executable crosses the wire. Priority, dependencies
  (``depends_on``), the per-attempt timeout (``timeout_s``) and ``max_retries`` go with it, so the
  controller's cluster-wide limiter, retries, cache and tracing apply. All cluster tasks of one
  :meth:`ParallelExecutor.execute_all` go in one job, except those waiting on a local task, which
  are submitted (as a further job) when it succeeds.
- a **plain Python callable** (the fork's ``_execute_single_step_parallel``: a closure over
  LangGraph state that cannot be sent anywhere) runs in this process under the same dependency,
  priority, timeout and retry contract, with no 3-wide cap: its inner LLM and tool calls are the
  ones that meet provider limits, and those go through the drop-in chat model and tools to the
  cluster-wide limiter. ``local_concurrency`` caps them if you want a cap anyway.

Where this differs from the fork, on purpose:

- A task whose dependency did not complete fails at once with :class:`DependencyFailedError`
  naming the dependency (the fork never starts it and, with an unknown or failed dependency,
  waits for ever). Unknown dependencies, duplicate ids and cycles raise ValueError before
  anything runs.
- A timed-out attempt is retried like any transient failure, up to ``max_retries`` (the fork
  fails the task at its first timeout); the final error is a TimeoutError as in the fork.
- ``max_concurrent_tasks``, ``rate_limiter``, ``enable_adaptive_scheduling`` and
  ``shared_context`` are accepted and unused: the cluster's limiter, tuner and result cache do
  their jobs for every process at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from deerflow_dropins._cluster import controller_address
from deerflow_dropins._executor_runs import run_local, watch_job
from deerflow_dropins._executor_types import (
    ClusterCall,
    ClusterCallable,
    DependencyFailedError,
    ParallelTask,
    TaskPriority,
    TaskResult,
    TaskStatus,
    cluster_task,
    decode_output,
)

if TYPE_CHECKING:
    from deerflow_controller.client import AsyncClient

__all__ = [
    "DEFAULT_MAX_PARALLEL_TASKS",
    "ClusterCall",
    "ClusterCallable",
    "DependencyFailedError",
    "ParallelExecutor",
    "ParallelTask",
    "TaskPriority",
    "TaskResult",
    "TaskStatus",
    "cluster_task",
    "create_parallel_executor",
    "decode_output",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PARALLEL_TASKS = 3
"""The fork's default ``max_parallel_tasks``; accepted for compatibility, capping nothing here."""


class ParallelExecutor:
    """Runs :class:`ParallelTask` s with priorities and dependencies; cluster calls on the
    cluster, plain callables here (see the module docstring).

    ``client`` is an :class:`~deerflow_controller.client.AsyncClient` of the loop that awaits
    :meth:`execute_all` (kept open); without one, a client to ``address`` (default: the
    ``DEERFLOW_CONTROLLER`` variable, else the SDK's default address) is opened for each
    :meth:`execute_all` that has cluster tasks, and closed after. ``local_concurrency`` caps
    local tasks running at once (0 = no cap); ``retry_backoff_s`` is the first pause before a
    local retry (doubling, jittered, capped at 30 s)."""

    def __init__(
        self,
        max_concurrent_tasks: int = DEFAULT_MAX_PARALLEL_TASKS,
        rate_limiter: object = None,
        enable_adaptive_scheduling: bool = True,
        task_timeout: float = 300.0,
        shared_context: object = None,
        *,
        client: AsyncClient | None = None,
        address: str | None = None,
        local_concurrency: int = 0,
        retry_backoff_s: float = 1.0,
        job_name: str = "parallel-executor",
    ) -> None:
        if isinstance(local_concurrency, bool) or not isinstance(local_concurrency, int):
            raise TypeError("local_concurrency must be an int (0 = no cap)")
        if local_concurrency < 0:
            raise ValueError(f"local_concurrency must be >= 0, got {local_concurrency}")
        if not (math.isfinite(retry_backoff_s) and 0 < retry_backoff_s <= 30):
            raise ValueError(f"retry_backoff_s must be in (0, 30], got {retry_backoff_s!r}")
        self.max_concurrent_tasks = max_concurrent_tasks
        self.task_timeout = task_timeout
        self.local_concurrency = local_concurrency
        self.retry_backoff_s = retry_backoff_s
        self.job_name = job_name
        self._client = client
        self._address = address
        self.pending_tasks: list[ParallelTask] = []
        self.completed_tasks: dict[str, TaskResult] = {}
        self.job_ids: list[str] = []
        """Every cluster job this executor submitted, in order (usually one per execute_all)."""
        self.total_tasks = 0
        self.successful_tasks = 0
        self.failed_tasks = 0
        self.rate_limited_tasks = 0

    # ----------------------------------------------------------------- the fork's API

    def add_task(self, task: ParallelTask) -> None:
        """Queue a task for the next :meth:`execute_all`."""
        if not isinstance(task, ParallelTask):
            raise TypeError(f"add_task takes a ParallelTask, got {type(task).__name__}")
        self.pending_tasks.append(task)
        self.total_tasks += 1

    def add_tasks(self, tasks: Iterable[ParallelTask]) -> None:
        for task in tasks:
            self.add_task(task)

    async def execute_all(self) -> dict[str, TaskResult]:
        """Run every queued task; return each one's :class:`TaskResult` by task id.

        Blocks (awaits) until all have finished. Raises ValueError, before anything runs, for
        duplicate ids, unknown dependencies or a cycle. Cancelling it cancels the local tasks
        and the cluster jobs it submitted. Task failures never raise: they are results."""
        _check_graph(self.pending_tasks, self.completed_tasks)  # refused: the queue stays
        tasks, self.pending_tasks = self.pending_tasks, []
        run = _Run(self, tasks)
        try:
            await run.run()
        finally:
            await run.close()
        for result in run.results.values():
            self.completed_tasks[result.task_id] = result
            if result.status is TaskStatus.COMPLETED:
                self.successful_tasks += 1
            else:
                self.failed_tasks += 1
            if result.rate_limit_delays:
                self.rate_limited_tasks += 1
        return dict(run.results)

    def execute_all_sync(self) -> dict[str, TaskResult]:
        """:meth:`execute_all` for code with no event loop (raises RuntimeError inside one)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.execute_all())
        raise RuntimeError(
            "execute_all_sync() was called inside a running event loop; "
            "use `await executor.execute_all()` there"
        )

    def get_stats(self) -> dict[str, Any]:
        """The fork's counters (over every :meth:`execute_all` of this executor)."""
        return {
            "total_tasks": self.total_tasks,
            "successful_tasks": self.successful_tasks,
            "failed_tasks": self.failed_tasks,
            "rate_limited_tasks": self.rate_limited_tasks,
            "current_concurrency": self.local_concurrency or None,
            "success_rate": self.successful_tasks / max(1, self.total_tasks),
            "pending_tasks": len(self.pending_tasks),
            "running_tasks": 0,
            "completed_tasks": len(self.completed_tasks),
            "job_ids": list(self.job_ids),
        }


def create_parallel_executor(
    max_concurrent_tasks: int | None = None,
    enable_rate_limiting: bool = True,
    enable_adaptive_scheduling: bool = True,
    shared_context: object = None,
    *,
    client: AsyncClient | None = None,
    address: str | None = None,
    local_concurrency: int = 0,
) -> ParallelExecutor:
    """The fork's factory. ``max_concurrent_tasks`` and the two ``enable_*`` switches are
    accepted for compatibility: the cluster limits and tunes concurrency for every process."""
    return ParallelExecutor(
        max_concurrent_tasks=max_concurrent_tasks or DEFAULT_MAX_PARALLEL_TASKS,
        enable_adaptive_scheduling=enable_adaptive_scheduling,
        shared_context=shared_context,
        client=client,
        address=address,
        local_concurrency=local_concurrency,
    )


# --------------------------------------------------------------------- one execute_all


def _check_graph(tasks: Sequence[ParallelTask], earlier: Mapping[str, TaskResult]) -> None:
    """Duplicate ids, unknown dependencies and cycles, as one-line ValueErrors. A dependency
    may name a task finished by an earlier execute_all of the same executor."""
    ids: set[str] = set()
    for task in tasks:
        if task.task_id in ids:
            raise ValueError(f"task id {task.task_id!r} was added twice; task ids must be unique")
        ids.add(task.task_id)
    for task in tasks:
        for dep in task.dependencies or ():
            if dep == task.task_id:
                raise ValueError(f"task {task.task_id!r} depends on itself")
            if dep not in ids and dep not in earlier:
                raise ValueError(
                    f"task {task.task_id!r} depends on {dep!r}, which is not a task of this "
                    "executor; add it or remove the dependency"
                )
    deps = {t.task_id: [d for d in t.dependencies or () if d in ids] for t in tasks}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for dep in deps[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise ValueError(f"the tasks' dependencies form a cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, path)
        path.pop()
        state[node] = 2

    for task in tasks:
        if task.task_id not in state:
            visit(task.task_id, [])


class _Run:
    """One :meth:`ParallelExecutor.execute_all`: which tasks wait, run here, or were submitted;
    outcomes arrive on one queue from local runners and job watchers."""

    def __init__(self, executor: ParallelExecutor, tasks: Sequence[ParallelTask]) -> None:
        self.executor = executor
        self.tasks = {t.task_id: t for t in tasks}
        self.order = {t.task_id: i for i, t in enumerate(tasks)}
        self.results: dict[str, TaskResult] = {}
        self.waiting: set[str] = set(self.tasks)
        self.earlier = executor.completed_tasks
        self.outcomes: asyncio.Queue[TaskResult] = asyncio.Queue()
        self.local_running = 0
        self.workers: list[asyncio.Task[None]] = []
        self.client: AsyncClient | None = executor._client
        self.owns_client = False
        self.calls: dict[str, ClusterCall] = {}
        self.live_jobs: list[str] = []

    def _ok(self, dep: str) -> bool | None:
        """True when ``dep`` completed, False when it finished otherwise, None while open."""
        result = self.results.get(dep) or self.earlier.get(dep)
        if result is None:
            return None
        return result.status is TaskStatus.COMPLETED

    async def run(self) -> None:
        for task_id in list(self.waiting):
            task = self.tasks[task_id]
            if task.on_cluster:
                try:
                    self.calls[task_id] = task.func.to_task(task.args, task.kwargs or {})
                except Exception as exc:  # a bad argument: this task fails, the rest run
                    self._finish(TaskResult(task_id, TaskStatus.FAILED, error=exc))
        while True:
            self._fail_dependents()
            await self._submit_ready_cluster_tasks()
            self._start_ready_local_tasks()
            if len(self.results) == len(self.tasks):
                return
            self._finish(await self.outcomes.get())

    def _finish(self, result: TaskResult) -> None:
        self.waiting.discard(result.task_id)
        self.results[result.task_id] = result
        if result.status is not TaskStatus.COMPLETED:
            logger.warning("task %r did not complete: %s", result.task_id, result.error)

    def _fail_dependents(self) -> None:
        changed = True
        while changed:
            changed = False
            for task_id in sorted(self.waiting, key=self.order.__getitem__):
                for dep in self.tasks[task_id].dependencies or ():
                    if self._ok(dep) is False:
                        cause = (self.results.get(dep) or self.earlier[dep]).error
                        error = DependencyFailedError(task_id, dep, cause)
                        self._finish(TaskResult(task_id, TaskStatus.FAILED, error=error))
                        changed = True
                        break

    def _by_priority(self, ids: Iterable[str]) -> list[str]:
        return sorted(ids, key=lambda i: (-self.tasks[i].priority.value, self.order[i]))

    def _start_ready_local_tasks(self) -> None:
        cap = self.executor.local_concurrency
        for task_id in self._by_priority(self.waiting):
            task = self.tasks[task_id]
            if task.on_cluster or not all(self._ok(d) for d in task.dependencies or ()):
                continue
            if cap and self.local_running >= cap:
                return
            self.waiting.discard(task_id)
            self.local_running += 1
            self.workers.append(asyncio.create_task(self._local(task)))

    async def _local(self, task: ParallelTask) -> None:
        try:
            outcome = await run_local(task, self.executor.retry_backoff_s)
        except Exception as exc:  # run_local reports failures as results; this is a bug of ours
            logger.exception("running task %r failed", task.task_id)
            outcome = TaskResult(task.task_id, TaskStatus.FAILED, error=exc)
        self.local_running -= 1
        self.outcomes.put_nowait(outcome)

    async def _submit_ready_cluster_tasks(self) -> None:
        """Submit, as one job, every waiting cluster task whose dependencies have completed or
        are cluster tasks of the same job (found as a fixpoint)."""
        batch: set[str] = set()
        grew = True
        while grew:
            grew = False
            for task_id in self.waiting - batch:
                task = self.tasks[task_id]
                if task_id not in self.calls:
                    continue
                deps = task.dependencies or ()
                if all(self._ok(d) or d in batch for d in deps):
                    batch.add(task_id)
                    grew = True
        if not batch:
            return
        from deerflow_controller.client import AsyncClient, Task

        specs = []
        for task_id in self._by_priority(batch):
            task, call = self.tasks[task_id], self.calls[task_id]
            specs.append(
                Task(
                    id=task_id,
                    handler=call.handler,
                    payload=call.payload,
                    priority=task.priority.value,
                    depends_on=[d for d in task.dependencies or () if d in batch],
                    timeout_s=float(task.timeout or 0.0),
                    max_retries=task.max_retries,
                    rate_keys=tuple(call.rate_keys),
                    est_tokens=call.est_tokens,
                    cache=call.cache,
                )
            )
        if self.client is None:
            self.client = AsyncClient(
                controller_address(self.executor._address),
                token=os.environ.get("DEERFLOW_TOKEN") or None,
            )
            self.owns_client = True
        started = time.monotonic()
        handle = await self.client.submit(specs, name=self.executor.job_name)
        self.waiting -= batch
        self.executor.job_ids.append(handle.job_id)
        self.live_jobs.append(handle.job_id)
        decoders = {task_id: self.calls[task_id].decode for task_id in batch}
        job_deps = {s.id: tuple(s.depends_on) for s in specs}
        self.workers.append(
            asyncio.create_task(
                watch_job(self.client, handle.job_id, decoders, job_deps, started, self.outcomes)
            )
        )

    async def close(self) -> None:
        """Stop what is still running (after a cancellation or an error), then the client."""
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        if self.client is not None:
            unfinished = len(self.results) < len(self.tasks)
            if unfinished:
                for job_id in self.live_jobs:
                    try:
                        await self.client.cancel(job_id, reason="execute_all was cancelled")
                    except Exception as exc:  # the job may be gone with the controller
                        logger.warning("could not cancel job %s: %s", job_id, exc)
            if self.owns_client:
                await self.client.close()
