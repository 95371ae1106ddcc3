"""The blocking client: the asyncio client driven on a private event loop in a daemon thread.

Safe to use from plain threads and from code that is not async. Do not call it from inside a
running event loop of the same thread (use :class:`AsyncClient` there): it would block that loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from deerflow_common.tls import TlsFiles
from deerflow_controller.client._async import DEFAULT_ADDRESS, AsyncClient, SubmittedJob
from deerflow_controller.client._types import Task, TaskEvent, TaskResult
from deerflow_protos import admin_pb2, client_pb2

T = TypeVar("T")


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
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="deerflow-client", daemon=True
        )
        self._thread.start()
        try:
            self._async = self._call(_make_client(address, timeout_s, token, tls))
        except BaseException:  # a bad TLS file: leave no loop thread behind
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
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
        if self._loop.is_closed():
            return
        self._call(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

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
            if aclose is not None and not self._loop.is_closed():
                self._call(aclose())

    def submit(
        self,
        tasks: Iterable[Task],
        *,
        job_id: str = "",
        name: str = "",
        timeout_s: float | None = None,
        deadline_s: float = 0.0,
    ) -> SyncJobHandle:
        """See :meth:`AsyncClient.submit`."""
        handle = self._call(
            self._async.submit(
                tasks, job_id=job_id, name=name, timeout_s=timeout_s, deadline_s=deadline_s
            )
        )
        return SyncJobHandle(self, handle.job_id, handle.accepted)

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

    def results(self, *, timeout_s: float | None = None) -> Iterator[TaskResult]:
        return self.client.results(self.job_id, timeout_s=timeout_s)

    def result(self, task_id: str, *, timeout_s: float | None = None) -> TaskResult:
        return self.client.result(self.job_id, task_id, timeout_s=timeout_s)

    def wait(self, *, timeout_s: float | None = None) -> dict[str, TaskResult]:
        return self.client.wait(self.job_id, timeout_s=timeout_s)

    def cancel(self, task_ids: Iterable[str] = (), *, reason: str = "") -> int:
        return self.client.cancel(self.job_id, task_ids, reason=reason)


async def _make_client(
    address: str, timeout_s: float | None, token: str | None, tls: TlsFiles | None
) -> AsyncClient:
    # The channel must be created on the loop that will use it.
    return AsyncClient(address, timeout_s=timeout_s, token=token, tls=tls)


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (as ``deerflow_common.run`` uses for the async
    clients), else asyncio's: the private loop runs the same grpc.aio code as an AsyncClient."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
