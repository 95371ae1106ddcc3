"""The span sink: a bounded queue of encoded spans, exported in batches, one request at a time,
through the SDK's exporter in a worker thread (as the SDK's batch span processor does)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._encoding import export_request, resource_field, scope_field
from ._exporter import Batch, endpoint_from_env
from ._sampling import Sampling

if TYPE_CHECKING:
    from ._config import BatchSettings

__all__ = ["MAX_REQUEST_BYTES", "SpanSink"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 3 << 20
"""A request stays under gRPC's default 4 MiB message limit, which collectors keep."""


class SpanSink:
    """A bounded queue of encoded spans, exported in batches as the SDK's batch processor does.

    :meth:`emit` never blocks: it appends to a deque (spans beyond ``max_queue`` are dropped and
    counted, with one warning per minute). Producers may record cheaply and encode later
    (:meth:`add_source`, :meth:`defer`). A task on the daemon's loop (started by the first
    :meth:`emit` or :meth:`defer`) exports whenever ``max_batch`` spans are waiting (queued or
    recorded) or ``schedule_delay_s`` has passed, one request at a time, each through the SDK
    exporter in a worker thread (which retries transient errors within its timeout).
    :meth:`flush` exports what is queued; :meth:`shutdown` flushes and shuts the exporter down.
    """

    def __init__(
        self,
        exporter: Any,
        resource: Mapping[str, object],
        scope: tuple[str, str],
        settings: BatchSettings,
        sampling: Sampling,
    ) -> None:
        self.exporter = exporter
        """An SDK ``SpanExporter`` whose ``export`` takes a :class:`Batch` (blocking: it runs in a
        worker thread, one request at a time)."""
        self.endpoint = endpoint_from_env()
        self.sampling = sampling
        self.settings = settings
        self.resource_attributes = dict(resource)
        self._resource = resource_field(resource)
        self._scope = scope_field(*scope)
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        """(encoded spans, how many) chunks: one span, or a block of equal-sized spans."""
        self._queued = 0
        self._max_queue = settings.max_queue
        self._max_batch = settings.max_batch
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()
        self._warned_at = 0.0
        self.exported = 0
        self.dropped = 0
        self.failed = 0
        self.provider: Any = None
        """The SDK TracerProvider installed beside this sink, if any (shut down with it)."""
        self._sources: list[Callable[[], None]] = []
        self._recorded = 0

    # Deferred encoding. A daemon's hot path only records what a span needs (the tasks of an
    # assignment message, an attempt's outcome); the spans are encoded just before an export,
    # a batch at a time, after the messages that carried the work have long left: tracing adds
    # no latency to a dispatch or a result, and spans of one shape are encoded together
    # (``encode_span_block``: about 0.5 us a span where one by one costs 3 us).

    def add_source(self, drain: Callable[[], None]) -> None:
        """Register ``drain``: it encodes what its producer recorded and emits the spans.
        Called before every export, so nothing recorded is left out."""
        self._sources.append(drain)

    def defer(self, spans: int = 1) -> None:
        """A producer recorded ``spans`` spans to encode later: the export task wakes when a
        batch's worth is waiting. A producer that outpaces the exports is drained at once, so
        records never outgrow the queue (what does not fit is dropped and counted)."""
        if self._wake is None:
            self.start()
        self._recorded += spans
        waiting = self._recorded + self._queued
        if waiting >= self._max_batch and self._wake is not None:
            self._wake.set()
        if self._recorded > self._max_queue:
            self._drain()

    def _drain(self) -> None:
        self._recorded = 0
        for drain in self._sources:
            try:
                drain()
            except Exception:  # a span lost, never the daemon
                log.exception("encoding spans failed")

    def start(self) -> None:
        """Start exporting from the running event loop (idempotent; without a running loop, as
        in a test feeding a tracer directly, spans wait for :meth:`flush`)."""
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())

    def emit(self, span: bytes) -> None:
        """Queue one encoded span (from the event loop's thread)."""
        if self._wake is None:
            self.start()
        if self._queued >= self._max_queue:
            self._drop()
            return
        self._queue.append((span, 1))
        self._queued += 1
        if self._queued == self._max_batch and self._wake is not None:
            self._wake.set()

    def emit_many(self, spans: list[bytes]) -> None:
        """Queue encoded spans, as :meth:`emit` does one."""
        for span in spans:
            self.emit(span)

    def emit_block(self, block: bytes, count: int) -> None:
        """Queue ``count`` spans of equal size encoded back to back (a
        :func:`encode_span_block` block); split into batches here."""
        if count <= 0:
            return
        if self._wake is None:
            self.start()
        room = max(self._max_queue - self._queued, 0)
        size = len(block) // count
        if room < count:
            self._drop(count - room)
            count = room
            block = block[: size * count]
        step = max(1, min(self._max_batch, (MAX_REQUEST_BYTES // 2) // max(size, 1)))
        for i in range(0, count, step):
            k = min(step, count - i)
            self._queue.append((block[i * size : (i + k) * size] if count > step else block, k))
        self._queued += count
        if self._queued >= self._max_batch and self._wake is not None:
            self._wake.set()

    def _drop(self, n: int = 1) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "span queue full (%d): dropping spans (%d so far); raise OTEL_BSP_MAX_QUEUE_SIZE "
                "or lower OTEL_BSP_SCHEDULE_DELAY",
                self._max_queue,
                self.dropped,
            )

    @property
    def queued(self) -> int:
        """Spans encoded and waiting for export (recorded ones are counted once encoded)."""
        return self._queued

    async def flush(self) -> None:
        """Export everything recorded and queued now (returns when sent, or given up on)."""
        await self._export_queued()

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush (for at most ``timeout_s``: a daemon must exit promptly even when the
        collector is down), stop the export task, close the channel."""
        try:
            await asyncio.wait_for(self.flush(), min(timeout_s, self.settings.export_timeout_s))
        except TimeoutError:
            log.warning("gave up exporting %d spans at shutdown", self._queued)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.exporter.shutdown)
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)

    async def _run(self) -> None:
        assert self._wake is not None
        delay = self.settings.schedule_delay_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            try:
                await self._export_queued()
            except Exception:  # never let the export task die
                log.exception("exporting spans failed")

    async def _export_queued(self) -> None:
        async with self._sending:
            self._drain()
            queue = self._queue
            while queue:
                chunks: list[bytes] = []
                spans = 0
                size = 0
                pop = queue.popleft
                while queue and spans < self._max_batch and size < MAX_REQUEST_BYTES:
                    if chunks and (
                        spans + queue[0][1] > self._max_batch
                        or size + len(queue[0][0]) > MAX_REQUEST_BYTES
                    ):
                        break
                    chunk, count = pop()
                    size += len(chunk)
                    spans += count
                    chunks.append(chunk)
                self._queued -= spans
                request = export_request(self._resource, self._scope, chunks)
                ok = await self._send(Batch(request, spans))
                if ok:
                    self.exported += spans
                else:
                    self.failed += spans
                if not queue and self._recorded >= self._max_batch:
                    self._drain()  # recorded while this request was out

    async def _send(self, batch: Batch) -> bool:
        """One export in a worker thread (the SDK exporter retries transient errors within its
        timeout and logs what fails)."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        result = await asyncio.to_thread(self.exporter.export, batch)
        return bool(result == SpanExportResult.SUCCESS)
