"""Reading a job's events: what the Session stream carries first (``submit(watch=...)``),
then WatchJob, resumed from the last seq seen whenever the stream breaks; each message converted
by the caller's function (TaskEvents for ``events()``, TaskResults for ``results()``, read from
the wire without a TaskEvent in between)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from deerflow_controller.client._errors import from_rpc_error, from_status
from deerflow_controller.client._retry import Moved, Retry
from deerflow_controller.client._session import (
    EPOCH_METADATA,
    SessionBroken,
    SessionCall,
    metadata_value,
)
from deerflow_controller.client._types import TERMINAL_NUMBERS, TaskEvent, TaskResult
from deerflow_protos import client_pb2, common_pb2

if TYPE_CHECKING:
    from deerflow_controller.client._async import AsyncClient

__all__ = ["WAIT_FOR_SUBMIT_S", "ResultsOf", "events_of", "watch_batches"]

WAIT_FOR_SUBMIT_S = 30.0
"""How long a watch opened together with its submit (``submit(watch=...)``) lets the controller
wait for the job to arrive (``WatchJobRequest.wait_for_submit_s``); the submit's own retries
through a failover fit in it."""

_RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL})

_B = TypeVar("_B")


def events_of(events: Sequence[common_pb2.TaskEvent]) -> list[TaskEvent]:
    return [TaskEvent.from_proto(ev) for ev in events]


class ResultsOf:
    """A job's terminal events as results, each task id once (a replay after a failover
    repeats events), read from the wire without a TaskEvent in between."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, events: Sequence[common_pb2.TaskEvent]) -> list[TaskResult]:
        seen = self.seen
        batch = []
        for ev in events:
            if ev.state in TERMINAL_NUMBERS and ev.task_id not in seen:
                seen.add(ev.task_id)
                batch.append(TaskResult.from_proto(ev))
        return batch


async def watch_batches(
    client: AsyncClient,
    job_id: str,
    convert: Callable[[Sequence[common_pb2.TaskEvent]], list[_B]],
    terminal_only: bool,
    after_seq: int,
    timeout_s: float | None,
    reconnect: bool,
    opened: Any,
) -> AsyncIterator[list[_B]]:
    """``client``'s view of job ``job_id``'s event messages, each as ``convert`` makes it (a
    message it makes nothing of is skipped); see ``AsyncClient.event_batches``. ``opened``: the
    Session call or WatchJob ``submit(watch=...)`` opened for it, read first."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    flt = client_pb2.TERMINAL if terminal_only else client_pb2.ALL
    pauses = Retry()
    epoch = ""  # the epoch after_seq counts in ("" outside HA mode)
    wait_s = WAIT_FOR_SUBMIT_S if opened is not None else 0.0
    if isinstance(opened, SessionCall):
        on_session, opened = opened, None
        try:
            while (message := await on_session.next(deadline)) is not None:
                if message.events:
                    after_seq = message.events[-1].seq
                    if out := convert(message.events):
                        yield out
            return
        except SessionBroken:
            # Resume through WatchJob from the last seq the session delivered.
            epoch = on_session.session.epoch
        except TimeoutError:
            raise from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "", client.address) from None
        finally:
            on_session.cancel()
    while True:
        remaining = None if deadline is None else max(0.001, deadline - loop.time())
        metadata = (*client._auth, (EPOCH_METADATA, epoch)) if epoch else client._auth
        call = opened or client._jobs.WatchJob(
            client_pb2.WatchJobRequest(
                job_id=job_id, after_seq=after_seq, filter=flt, wait_for_submit_s=wait_s
            ),
            timeout=remaining,
            metadata=metadata,
        )
        preopened, opened = opened is not None, None
        try:
            epoch = metadata_value(await call.initial_metadata(), EPOCH_METADATA)
            async for batch in call:
                pauses.reset()
                if batch.events:
                    after_seq = batch.events[-1].seq
                    if out := convert(batch.events):
                        yield out
            return
        except grpc.aio.AioRpcError as e:
            if preopened and e.code() == grpc.StatusCode.NOT_FOUND:
                # A controller that predates wait_for_submit_s, reached before the submit
                # was: the submit has been answered since, so look again now.
                continue
            if not reconnect or e.code() not in _RESUMABLE:
                raise from_rpc_error(e, client.address) from None
            if deadline is not None and loop.time() >= deadline:
                raise from_rpc_error(e, client.address) from None
            moved = client._move(e) if e.code() == grpc.StatusCode.UNAVAILABLE else None
            pause = pauses.pause_s(followed_pointer=moved is Moved.POINTER)
        finally:
            call.cancel()
        await asyncio.sleep(pause)
