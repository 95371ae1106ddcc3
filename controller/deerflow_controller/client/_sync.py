"""The blocking client: the asyncio client driven on a private event loop in a daemon thread.

Safe to use from plain threads and from code that is not async. Do not call it from inside a
running event loop of the same thread (use :class:`AsyncClient` there): it would block that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, cast

import grpc

from deerflow_common.runner import new_loop
from deerflow_common.tls import TlsFiles
from deerflow_controller.client import _fork as fork
from deerflow_controller.client._async import DEFAULT_ADDRESS, AsyncClient
from deerflow_controller.client._errors import DeerflowError
from deerflow_controller.client._fork import FORKED_AFTER_GRPC
from deerflow_controller.client._handle import JobHandle, SubmittedJob
from deerflow_controller.client._types import Task, TaskEvent, TaskResult
from deerflow_protos import admin_pb2, client_pb2

T = TypeVar("T")


class _Call(Generic[T]):
    """One coroutine handed to the loop thread, and its outcome. The caller blocks on ``done``,
    a lock the loop thread releases when the coroutine ends: one futex wake, where a
    ``concurrent.futures.Future`` takes a Condition and its own waiter lock."""

    __slots__ = ("coro", "done", "error", "value")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.done = threading.Lock()
        self.done.acquire()
        self.value: T | None = None
        self.error: BaseException | None = None


class _LoopThread:
    """A private event loop in a daemon thread, and the one way onto it: :meth:`call`.

    Calls from any number of threads queue in one deque; the loop is woken once per batch (when
    the first call of a batch arrives, not once per call) and starts every queued coroutine as a
    task in one callback. This replaces ``asyncio.run_coroutine_threadsafe``, which costs a
    ``concurrent.futures.Future``, a handle and a wake-up per call, and a chain of two
    callbacks back: about half the client's own CPU per call of a thread pool of callers."""

    def __init__(self) -> None:
        self.loop = new_loop()
        self._lock = threading.Lock()  # guards _pending, _woken and closed
        self._pending: deque[_Call[Any]] = deque()
        self._woken = False  # a _start_pending callback is scheduled and has not yet run
        self.closed = False
        self.forked = False  # this is a copy in a child process: the thread is not here
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="deerflow-client", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread; block until it ends; return or raise its outcome.

        Raises RuntimeError once the client is closed. A call still running when the client
        is closed ends with a :class:`DeerflowError` (CANCELLED)."""
        call = _Call(coro)
        with self._lock:
            if self.closed:
                coro.close()
                if self.forked:
                    raise RuntimeError(FORKED_AFTER_GRPC)
                raise RuntimeError(
                    "this deerflow Client is closed; create a new Client to make more calls"
                )
            self._queue(call)
        return self._outcome(call)

    def stop(self, last: Coroutine[Any, Any, None]) -> None:
        """Refuse calls from now on, run ``last`` (closing the AsyncClient's channels ends the
        RPCs in flight), cancel every call still running, then stop the loop and its thread.
        Idempotent; blocks until the thread has ended."""
        with self._lock:
            if self.closed:
                last.close()
                return
            self.closed = True
            _LIVE.discard(self)
            call = _Call(self._shut_down(last))
            self._queue(call)  # after every call queued before: they are started first
        try:
            self._outcome(call)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()

    def _queue(self, call: _Call[Any]) -> None:
        """Append ``call``; wake the loop unless a wake-up is already on its way (under the
        lock: a wake-up scheduled is a ``_start_pending`` that will see this call)."""
        self._pending.append(call)
        if not self._woken:
            self._woken = True
            self.loop.call_soon_threadsafe(self._start_pending)

    def _outcome(self, call: _Call[T]) -> T:
        call.done.acquire()
        if call.error is None:
            return cast(T, call.value)
        if isinstance(call.error, asyncio.CancelledError):
            if self.closed:
                raise DeerflowError(
                    "the deerflow Client was closed while this call was in flight; "
                    "create a new Client to retry it",
                    grpc.StatusCode.CANCELLED,
                ) from None
            # As run_coroutine_threadsafe's future reported a cancelled coroutine.
            raise concurrent.futures.CancelledError() from None
        raise call.error

    def _start_pending(self) -> None:
        # On the loop thread.
        with self._lock:
            calls = list(self._pending)
            self._pending.clear()
            self._woken = False
        for call in calls:
            self.loop.create_task(_drive(call))

    async def _shut_down(self, last: Coroutine[Any, Any, None]) -> None:
        try:
            await last
        finally:
            # Calls not ended by closing the channels (a retry's pause, a fake stub): a
            # thread blocked on one of them would otherwise wait for good.
            current = asyncio.current_task()
            running = [t for t in asyncio.all_tasks() if t is not current]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def after_fork_in_child(self) -> None:
        """In a forked child: the loop thread was not copied, the lock may have been held by a
        thread that was not either, and the loop's wake-up descriptor is the parent's. Refuse
        every call (RuntimeError naming the fix) rather than hang or wake the parent's loop."""
        self._lock = threading.Lock()
        self._pending.clear()
        self.closed = self.forked = True


_LIVE: weakref.WeakSet[_LoopThread] = weakref.WeakSet()
"""Loop threads not yet stopped, for the fork hook."""


def _after_fork_in_child() -> None:
    for loop_thread in list(_LIVE):
        loop_thread.after_fork_in_child()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


async def _drive(call: _Call[T]) -> None:
    """Run the call's coroutine and hand its outcome to the waiting thread. Setting the
    outcome here, at the end of the task, saves the extra loop turn a done-callback costs."""
    try:
        call.value = await call.coro
    except BaseException as e:  # every outcome goes back to the caller, CancelledError too
        call.error = e
    finally:
        call.done.release()


class Client:
    """Blocking twin of :class:`AsyncClient`; same methods, same errors, same deadlines."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout_s: float | None = 30.0,
        token: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        fork.opening()  # refuses in a child forked after its parent used gRPC
        self._loop_thread = _LoopThread()
        try:
            self._async = self._call(_make_client(address, timeout_s, token, tls))
        except BaseException:  # a bad TLS file: leave no loop thread behind
            self._loop_thread.stop(_nothing())
            raise
        self.address = address

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the client's thread. Calls in flight in other threads
        end with a DeerflowError (CANCELLED); later calls raise RuntimeError. Idempotent."""
        self._loop_thread.stop(self._async.close())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """The one thread crossing: run ``coro`` on the client's loop, wait for its outcome."""
        return self._loop_thread.call(coro)

    def _iterate(self, batches: AsyncIterator[list[T]]) -> Iterator[T]:
        """Yield the items of an async iterator of lists, one thread crossing per list (a
        WatchJob message's worth), not per item: a crossing costs about as much as the rest
        of an item's handling in the SDK."""
        try:
            while True:
                try:
                    batch = self._call(_anext(batches))
                except StopAsyncIteration:
                    return
                yield from batch
        finally:
            aclose = getattr(batches, "aclose", None)
            if aclose is not None and not self._loop_thread.closed:
                self._call(aclose())

    def submit(
        self,
        tasks: Iterable[Task],
        *,
        job_id: str = "",
        name: str = "",
        timeout_s: float | None = None,
        deadline_s: float = 0.0,
        watch: Literal["", "results"] = "",
    ) -> SyncJobHandle:
        """See :meth:`AsyncClient.submit`; ``watch="results"`` has the handle's first
        ``results()``, ``result()`` or ``wait()`` read the results sent with the submit (over
        the client's Session stream)."""
        handle = self._call(
            self._async.submit(
                tasks,
                job_id=job_id,
                name=name,
                timeout_s=timeout_s,
                deadline_s=deadline_s,
                watch=watch,
            )
        )
        return SyncJobHandle(self, handle.job_id, handle.accepted, handle if watch else None)

    def events(
        self, job_id: str, *, terminal_only: bool = False, timeout_s: float | None = None
    ) -> Iterator[TaskEvent]:
        return self._iterate(
            self._async.event_batches(job_id, terminal_only=terminal_only, timeout_s=timeout_s)
        )

    def results(self, job_id: str, *, timeout_s: float | None = None) -> Iterator[TaskResult]:
        return self._iterate(self._async.result_batches(job_id, timeout_s=timeout_s))

    def result(self, job_id: str, task_id: str, *, timeout_s: float | None = None) -> TaskResult:
        return self._call(self._async.result(job_id, task_id, timeout_s=timeout_s))

    def wait(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, TaskResult]:
        return self._call(self._async.wait(job_id, timeout_s=timeout_s))

    def run(
        self,
        tasks: Iterable[Task],
        *,
        job_id: str = "",
        name: str = "",
        timeout_s: float | None = None,
        deadline_s: float = 0.0,
    ) -> dict[str, TaskResult]:
        """``submit(...).wait()`` in one thread crossing instead of two: what a thread pool of
        callers (DeerFlow's synchronous tools) should use. See :meth:`AsyncClient.run`."""
        return self._call(
            self._async.run(
                tasks, job_id=job_id, name=name, timeout_s=timeout_s, deadline_s=deadline_s
            )
        )

    def cancel(
        self,
        job_id: str,
        task_ids: Iterable[str] = (),
        *,
        reason: str = "",
        timeout_s: float | None = None,
    ) -> int:
        return self._call(self._async.cancel(job_id, task_ids, reason=reason, timeout_s=timeout_s))

    def get_job(self, job_id: str, *, timeout_s: float | None = None) -> client_pb2.JobStatus:
        return self._call(self._async.get_job(job_id, timeout_s=timeout_s))

    def get_task(
        self, job_id: str, task_id: str, *, timeout_s: float | None = None
    ) -> client_pb2.TaskStatus:
        return self._call(self._async.get_task(job_id, task_id, timeout_s=timeout_s))

    def stats(self, *, timeout_s: float | None = None) -> admin_pb2.Stats:
        return self._call(self._async.stats(timeout_s=timeout_s))

    def agents(
        self, *, wait_for: int = 0, timeout_s: float | None = None
    ) -> list[admin_pb2.AgentInfo]:
        return self._call(self._async.agents(wait_for=wait_for, timeout_s=timeout_s))

    def list_jobs(
        self,
        *,
        limit: int = 0,
        cursor: str = "",
        state: str = "",
        timeout_s: float | None = None,
    ) -> admin_pb2.JobList:
        return self._call(
            self._async.list_jobs(limit=limit, cursor=cursor, state=state, timeout_s=timeout_s)
        )

    def job_detail(
        self,
        job_id: str,
        *,
        task_limit: int = 0,
        task_offset: int = 0,
        timeout_s: float | None = None,
    ) -> admin_pb2.JobDetail:
        return self._call(
            self._async.job_detail(
                job_id, task_limit=task_limit, task_offset=task_offset, timeout_s=timeout_s
            )
        )

    def drain_agent(self, agent_id: str, *, timeout_s: float | None = None) -> None:
        self._call(self._async.drain_agent(agent_id, timeout_s=timeout_s))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self._call(self._async.wait_ready(timeout_s))


class SyncJobHandle(SubmittedJob[Client]):
    """A submitted job: iterate its results, wait for it, cancel it (blocking)."""

    def __init__(
        self, client: Client, job_id: str, accepted: int, watched: JobHandle | None = None
    ) -> None:
        super().__init__(client, job_id, accepted)
        self._watched = watched
        """The async handle of a ``submit(watch="results")``: its first reader takes the
        results sent with the submit."""

    def results(self, *, timeout_s: float | None = None) -> Iterator[TaskResult]:
        if self._watched is not None:
            return self.client._iterate(self._watched.result_batches(timeout_s=timeout_s))
        return self.client.results(self.job_id, timeout_s=timeout_s)

    def result(self, task_id: str, *, timeout_s: float | None = None) -> TaskResult:
        if self._watched is not None:
            return self.client._call(self._watched.result(task_id, timeout_s=timeout_s))
        return self.client.result(self.job_id, task_id, timeout_s=timeout_s)

    def wait(self, *, timeout_s: float | None = None) -> dict[str, TaskResult]:
        if self._watched is not None:
            return self.client._call(self._watched.wait(timeout_s=timeout_s))
        return self.client.wait(self.job_id, timeout_s=timeout_s)

    def cancel(self, task_ids: Iterable[str] = (), *, reason: str = "") -> int:
        return self.client.cancel(self.job_id, task_ids, reason=reason)


async def _make_client(
    address: str, timeout_s: float | None, token: str | None, tls: TlsFiles | None
) -> AsyncClient:
    # The channel must be created on the loop that will use it.
    return AsyncClient(address, timeout_s=timeout_s, token=token, tls=tls)


async def _nothing() -> None:
    pass


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()
