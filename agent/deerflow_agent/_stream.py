"""One stream to a controller after its Welcome: the outbox of reports and the single writer
task that owns ``call.write``.

The writer lingers two loop turns after waking and merges queued batches of one kind into one
message, so a message may carry several turns' results (never one turn's in two messages, unless
a batch passes 8 MiB of outputs). Batches stay unbuilt in the outbox so that queued ones can
merge and results not yet written can move to the next stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import grpc

from deerflow_common.errors import AttemptKey
from deerflow_protos import agent_pb2

from ._attempt import Outcome

__all__ = [
    "Entry",
    "Progress",
    "Results",
    "Started",
    "StartedItem",
    "Stream",
    "build_message",
    "draining_message",
]

_LINGER_TURNS = 2
"""Loop turns the idle writer lets pass after waking before it writes, so that results of
back-to-back turns share a message. Costs microseconds of latency; on a stream of tiny tasks it
cuts messages (about 100 us of CPU each on both sides in grpc.aio) several-fold: echo with 16
slots and 2 prefetch went from 5k to 15k tasks/s."""
_MIN_WRITE_INTERVAL_S = 0.002
"""A writer that wrote less than this long ago waits until this long has passed before writing
again, so reports trickling in (slots finishing one by one, a task each 0.8 ms on a 64-slot
agent running 50 ms tasks) share messages: at most 500 messages a second per stream. At a
trickle the controller otherwise spends its loop on per-message costs, and assignments and
results queue behind it (measured: about 40 ms of attempts held in transit, slots idle). Costs
at most 2 ms of latency, and only to a stream that is busy."""
_MAX_BATCH_BYTES = 8 << 20  # well under the 64 MiB message limit, even with per-result overhead
StartedItem = tuple[AttemptKey, float]


@dataclass(slots=True)
class Results:
    items: list[Outcome]


@dataclass(slots=True)
class Started:
    items: list[StartedItem]


@dataclass(slots=True)
class Progress:
    items: list[tuple[AttemptKey, float, str]]


Entry = Results | Started | Progress | agent_pb2.AgentMessage
"""An outbox entry: batches stay unbuilt so that queued ones can merge and unsent results can
move to the next stream; other messages are built when queued."""


class Stream:
    """One Connect call after Welcome: the outbox and the single writer that owns call.write."""

    def __init__(self, call: grpc.aio.StreamStreamCall, address: str, welcome: agent_pb2.Welcome):
        self.call = call
        self.address = address
        self.epoch = welcome.epoch
        self.heartbeat_interval_s = welcome.heartbeat_interval_s or 1.0
        self.outbox: deque[Entry] = deque()
        self.in_flight: Entry | None = None
        self.closing = False
        self.close_sent = False
        self._wakeup = asyncio.Event()
        self._last_write = -1.0  # loop time of the last write
        self._urgent = False  # a queued entry must not wait out the write interval
        self._pause: asyncio.Future[None] | None = None  # the writer's pause, while it lasts

    def send(self, entry: Entry, *, urgent: bool = False) -> bool:
        """Queue a message; False once the stream is closing (the caller keeps what it sent).

        ``urgent``: write it without waiting out the write interval (and end a pause the
        writer is in): for results the controller is waiting on to refill the agent (see
        ``Session._flush``). Everything queued before it goes in the same write."""
        if self.closing:
            return False
        self.outbox.append(entry)
        if urgent:
            self._urgent = True
            pause = self._pause
            if pause is not None and not pause.done():
                pause.set_result(None)
        self._wakeup.set()
        return True

    def close(self) -> None:
        """Write what is queued, then half-close (done_writing)."""
        self.closing = True
        self._wakeup.set()

    def unsent_outcomes(self) -> list[Outcome]:
        """Results not known to be written, oldest first, for the next stream."""
        entries = [self.in_flight] if self.in_flight is not None else []
        entries.extend(self.outbox)
        return [o for e in entries if isinstance(e, Results) for o in e.items]

    async def write_loop(self) -> None:
        """Write queued messages in order; return after done_writing. Raises when the call
        fails; unsent results stay behind for :meth:`unsent_outcomes`."""
        outbox = self.outbox
        write = self.call.write
        while True:
            if not outbox:
                if self.closing:
                    self.close_sent = True
                    await self.call.done_writing()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                loop = asyncio.get_running_loop()
                pause = self._last_write + _MIN_WRITE_INTERVAL_S - loop.time()
                if pause > 0 and not self._urgent:
                    await self._paused(loop, pause)
                else:
                    for _ in range(_LINGER_TURNS):
                        await asyncio.sleep(0)
                continue
            entry = outbox.popleft()
            if isinstance(entry, Results):
                entry = self._merge_results(entry)
            elif isinstance(entry, Started):
                while outbox and isinstance(head := outbox[0], Started):
                    outbox.popleft()
                    entry = Started(entry.items + head.items)
            self.in_flight = entry
            if not outbox:
                self._urgent = False
            await write(build_message(entry))
            self.in_flight = None
            self._last_write = asyncio.get_running_loop().time()

    async def _paused(self, loop: asyncio.AbstractEventLoop, pause: float) -> None:
        """Sleep ``pause`` seconds, or less when an urgent entry is queued meanwhile."""
        self._pause = fut = loop.create_future()
        timer = loop.call_later(pause, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._pause = None

    def _merge_results(self, first: Results) -> Results:
        """Join result batches queued behind ``first`` while within the size budget, or split
        an oversized one and put its tail back at the front."""
        outbox = self.outbox
        items = first.items
        size = 0
        for i, o in enumerate(items):
            size += len(o.output)
            if size > _MAX_BATCH_BYTES and i > 0:
                outbox.appendleft(Results(items[i:]))
                return Results(items[:i])
        while outbox and isinstance(outbox[0], Results):
            more = outbox[0].items
            extra = sum(len(o.output) for o in more)
            if size + extra > _MAX_BATCH_BYTES:
                break
            size += extra
            if items is first.items:
                items = list(items)
            items.extend(more)
            outbox.popleft()
        return first if items is first.items else Results(items)


def build_message(entry: Entry) -> agent_pb2.AgentMessage:
    if isinstance(entry, agent_pb2.AgentMessage):
        return entry
    msg = agent_pb2.AgentMessage()
    if isinstance(entry, Progress):
        add_progress = msg.progress.progress.add
        for (job_id, task_id, attempt), fraction, message in entry.items:
            p = add_progress(fraction=fraction, message=message)
            p.ref.job_id, p.ref.task_id, p.ref.attempt = job_id, task_id, attempt
        return msg
    if isinstance(entry, Started):
        add_started = msg.started.started.add
        for key, t in entry.items:
            ref = add_started(time=t).ref
            ref.job_id, ref.task_id, ref.attempt = key
        return msg
    add_result = msg.results.results.add
    for o in entry.items:
        if o.ok:
            r = add_result(
                ok=True,
                output=o.output,
                started_at=o.started_at,
                finished_at=o.finished_at,
                cancelled=o.cancelled,
            )
        else:
            r = add_result(
                started_at=o.started_at, finished_at=o.finished_at, cancelled=o.cancelled
            )
            e = o.error
            if e is not None:
                err = r.error
                err.kind = int(e.kind)  # type: ignore[assignment]  # same values as the wire enum
                err.message = e.message
                err.retryable = e.retryable
                err.retry_after_s = e.retry_after_s
                err.error_class = int(e.error_class)  # type: ignore[assignment]  # same values
        if o.cpu_s or o.rss_bytes:
            r.cpu_s = o.cpu_s
            r.rss_bytes = o.rss_bytes
        if o.metadata:
            r.metadata.update(o.metadata)
        ref = r.ref
        ref.job_id, ref.task_id, ref.attempt = o.key
    return msg


def draining_message(keys: list[AttemptKey]) -> agent_pb2.AgentMessage:
    msg = agent_pb2.AgentMessage()
    draining = msg.draining
    draining.SetInParent()
    add_ref = draining.not_started.add
    for job_id, task_id, attempt in keys:
        add_ref(job_id=job_id, task_id=task_id, attempt=attempt)
    return msg


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
