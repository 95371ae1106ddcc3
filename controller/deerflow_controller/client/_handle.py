"""A submitted job's handle: what both clients' handles hold, and the async client's, which
reads the result stream ``AsyncClient.submit(watch=...)`` opened with the submit first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from deerflow_controller.client._session import SessionCall
from deerflow_controller.client._types import TaskEvent, TaskResult
from deerflow_protos import client_pb2

if TYPE_CHECKING:
    # Used in the quoted base of JobHandle below (a runtime import would be circular).
    from deerflow_controller.client._async import AsyncClient  # noqa: F401

__all__ = ["JobHandle", "SubmittedJob"]

ClientT = TypeVar("ClientT")


class SubmittedJob(Generic[ClientT]):
    """What the handles of both clients hold: the client, the job's id and the number of tasks
    the controller accepted (``SubmitJobReply.accepted``)."""

    def __init__(self, client: ClientT, job_id: str, accepted: int) -> None:
        self.client = client
        self.job_id = job_id
        self.accepted = accepted


class JobHandle(SubmittedJob["AsyncClient"]):
    """A submitted job: iterate its results, wait for it, cancel it."""

    _opened: tuple[int, Any] | None = None
    """The stream ``submit(watch=...)`` opened (its filter, the call) until a reader takes it."""

    def _take(self, flt: int, timeout_s: float | None) -> Any:
        """The pre-opened stream for a reader of filter ``flt``, or None (a reader with another
        filter, or with its own timeout when the stream is a WatchJob, opens its own; the
        pre-opened one is then cancelled)."""
        opened, self._opened = self._opened, None
        if opened is None:
            return None
        # A Session call keeps its deadline here; a WatchJob opened with the submit has none.
        if opened[0] == flt and (timeout_s is None or isinstance(opened[1], SessionCall)):
            return opened[1]
        opened[1].cancel()
        return None

    def results(self, *, timeout_s: float | None = None) -> AsyncIterator[TaskResult]:
        opened = self._take(client_pb2.TERMINAL, timeout_s)
        return self.client.results(self.job_id, timeout_s=timeout_s, _opened=opened)

    def result_batches(self, *, timeout_s: float | None = None) -> AsyncIterator[list[TaskResult]]:
        """:meth:`results` a message at a time (what the blocking handle crosses threads with)."""
        opened = self._take(client_pb2.TERMINAL, timeout_s)
        return self.client.result_batches(self.job_id, timeout_s=timeout_s, _opened=opened)

    def events(self, *, timeout_s: float | None = None) -> AsyncIterator[TaskEvent]:
        opened = self._take(client_pb2.ALL, timeout_s)
        return self.client.events(self.job_id, timeout_s=timeout_s, _opened=opened)

    async def result(self, task_id: str, *, timeout_s: float | None = None) -> TaskResult:
        opened = self._take(client_pb2.TERMINAL, timeout_s)
        return await self.client.result(self.job_id, task_id, timeout_s=timeout_s, _opened=opened)

    async def wait(self, *, timeout_s: float | None = None) -> dict[str, TaskResult]:
        opened = self._take(client_pb2.TERMINAL, timeout_s)
        return await self.client.wait(self.job_id, timeout_s=timeout_s, _opened=opened)

    async def cancel(self, task_ids: Iterable[str] = (), *, reason: str = "") -> int:
        return await self.client.cancel(self.job_id, task_ids, reason=reason)
