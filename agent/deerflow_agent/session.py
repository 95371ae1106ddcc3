"""The agent's stream to the controller: hello, welcome, assignments in, reports out, drain.

Follows ``deerflow_protos/agent.proto``. One :class:`Agent` lives as long as the process; it
opens one stream at a time (a :class:`_Stream`) and opens another when one breaks, while the
:class:`Runtime` keeps running attempts across the gap:

- Running attempts survive a broken stream; their results are buffered and sent after the next
  Welcome, and the next Hello lists the attempts still running so the controller can keep them.
- Attempts received but not started are dropped when the stream breaks: the controller already
  counts every unfinished attempt of a lost stream as lost and assigns it again.
- Reconnects back off exponentially with jitter (0.1 s doubling to 5 s), trying the same
  controller once after a stream that worked, then rotating through ``controllers``.
- An AssignmentBatch of an epoch lower than the highest seen is refused: logged, dropped, and
  the stream closed so that the agent looks for the current leader.
- Drain (SIGTERM or a Drain message): Draining gives back the attempts not started; assignments
  that cross it in flight are given back by a further Draining, never run; running attempts
  finish and report; then the agent half-closes the stream and :meth:`Agent.run` returns.

Reports are batched per event-loop turn: the first Started or Result of a turn schedules a flush
with ``loop.call_soon``; the flush sends everything that finished as one ResultBatch. Started
reports wait one flush longer and are dropped when the Result comes first, so attempts that end
within a loop turn or two (echo) cost no Started message at all. A single writer task owns
``call.write``; it lingers two loop turns after waking and merges queued batches of one kind into
one message, so a message may carry several turns' results (never one turn's in two messages,
unless a batch passes 8 MiB of outputs).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib.metadata
import logging
import os
import random
import socket
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

from deerflow_common import channel_options
from deerflow_common.tracing import TRACEPARENT, context_dict
from deerflow_protos import agent_pb2, agent_pb2_grpc

from ._handler import Handler, HandlerKind
from .load import LoadSampler, machine_capacity
from .runtime import Attempt, AttemptKey, AttemptObserver, Outcome, Runtime

__all__ = ["Agent", "AgentConfig"]

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("deerflow-parallel")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def attempt_from_assignment(a: agent_pb2.Assignment) -> Attempt:
    """An assignment as the runtime's attempt. Its trace context is the ``traceparent`` field
    plus the map's other entries; a controller that predates the field sends the traceparent
    in the map, which is then used."""
    ref = a.ref
    tp = a.traceparent
    tc: dict[str, str] | None = None
    if a.trace_context:  # tracestate and the like, or an older controller
        tc = context_dict(a.trace_context)
        if tp:
            tc[TRACEPARENT] = tp
    elif tp:
        tc = {TRACEPARENT: tp}
    return Attempt((ref.job_id, ref.task_id, ref.attempt), a.handler, a.payload, a.timeout_s, tc)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """How an agent connects and how much it runs at once."""

    controllers: tuple[str, ...] = ("127.0.0.1:7400",)
    """host:port of each controller; the agent rotates through them until one welcomes it."""

    agent_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """Unique per running agent; hostname-pid by default, so a restarted agent is a new one."""

    slots: int = 16
    """Concurrent attempts on this agent across all handlers."""

    cpu_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Processes in the cpu-handler pool (created on the first cpu attempt)."""

    handler_slots: Mapping[str, int] = field(default_factory=dict)
    """Per-handler caps on concurrent attempts on this agent (``--handler-slots llm=3``); they
    override the handlers' own caps and are reported in Hello. Empty: each handler's own cap."""

    labels: Mapping[str, str] = field(default_factory=dict)
    """Free-form key/values the controller matches against a task's labels."""

    token: str = ""
    """Sent in Hello for controllers that authenticate agents."""

    welcome_timeout_s: float = 10.0
    """How long to wait for Welcome after Hello before trying again."""

    backoff_initial_s: float = 0.1
    """First reconnect delay; doubles per failed attempt, with jitter."""

    backoff_max_s: float = 5.0
    """Cap on the reconnect delay: a restarted controller is found within seconds."""

    drain_delivery_timeout_s: float = 10.0
    """While draining with nothing left to run, how long to keep trying to deliver buffered
    results to an unreachable controller before exiting (it reruns those tasks anyway)."""

    close_timeout_s: float = 5.0
    """After a drain closes our side of the stream, how long to wait for the controller's end."""

    def __post_init__(self) -> None:
        if not self.controllers or not all(self.controllers):
            raise ValueError("at least one controller address (host:port) is required")
        if not self.agent_id:
            raise ValueError("the agent id must not be empty")
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, got {self.slots}")
        if self.cpu_workers < 1:
            raise ValueError(f"cpu_workers must be at least 1, got {self.cpu_workers}")


class _End(enum.Enum):
    DRAINED = "drained"  # drain finished and the stream closed cleanly: exit
    BROKE = "broke"  # the stream worked, then broke: try the same controller again first
    FAILED = "failed"  # no Welcome, or a stale leader: try the next controller


class _StaleEpoch(Exception):
    pass


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
_StartedItem = tuple[AttemptKey, float]


@dataclass(slots=True)
class _Results:
    items: list[Outcome]


@dataclass(slots=True)
class _Started:
    items: list[_StartedItem]


@dataclass(slots=True)
class _Progress:
    items: list[tuple[AttemptKey, float, str]]


_Entry = _Results | _Started | _Progress | agent_pb2.AgentMessage
"""An outbox entry: batches stay unbuilt so that queued ones can merge and unsent results can
move to the next stream; other messages are built when queued."""


class _Stream:
    """One Connect call after Welcome: the outbox and the single writer that owns call.write."""

    def __init__(self, call: grpc.aio.StreamStreamCall, address: str, welcome: agent_pb2.Welcome):
        self.call = call
        self.address = address
        self.epoch = welcome.epoch
        self.heartbeat_interval_s = welcome.heartbeat_interval_s or 1.0
        self.outbox: deque[_Entry] = deque()
        self.in_flight: _Entry | None = None
        self.closing = False
        self.close_sent = False
        self._wakeup = asyncio.Event()
        self._last_write = -1.0  # loop time of the last write

    def send(self, entry: _Entry) -> bool:
        """Queue a message; False once the stream is closing (the caller keeps what it sent)."""
        if self.closing:
            return False
        self.outbox.append(entry)
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
        return [o for e in entries if isinstance(e, _Results) for o in e.items]

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
                if pause > 0:
                    await asyncio.sleep(pause)
                else:
                    for _ in range(_LINGER_TURNS):
                        await asyncio.sleep(0)
                continue
            entry = outbox.popleft()
            if isinstance(entry, _Results):
                entry = self._merge_results(entry)
            elif isinstance(entry, _Started):
                while outbox and isinstance(head := outbox[0], _Started):
                    outbox.popleft()
                    entry = _Started(entry.items + head.items)
            self.in_flight = entry
            await write(_build(entry))
            self.in_flight = None
            self._last_write = asyncio.get_running_loop().time()

    def _merge_results(self, first: _Results) -> _Results:
        """Join result batches queued behind ``first`` while within the size budget, or split
        an oversized one and put its tail back at the front."""
        outbox = self.outbox
        items = first.items
        size = 0
        for i, o in enumerate(items):
            size += len(o.output)
            if size > _MAX_BATCH_BYTES and i > 0:
                outbox.appendleft(_Results(items[i:]))
                return _Results(items[:i])
        while outbox and isinstance(outbox[0], _Results):
            more = outbox[0].items
            extra = sum(len(o.output) for o in more)
            if size + extra > _MAX_BATCH_BYTES:
                break
            size += extra
            if items is first.items:
                items = list(items)
            items.extend(more)
            outbox.popleft()
        return first if items is first.items else _Results(items)


def _build(entry: _Entry) -> agent_pb2.AgentMessage:
    if isinstance(entry, agent_pb2.AgentMessage):
        return entry
    msg = agent_pb2.AgentMessage()
    if isinstance(entry, _Progress):
        add_progress = msg.progress.progress.add
        for (job_id, task_id, attempt), fraction, message in entry.items:
            p = add_progress(fraction=fraction, message=message)
            p.ref.job_id, p.ref.task_id, p.ref.attempt = job_id, task_id, attempt
        return msg
    if isinstance(entry, _Started):
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


def _draining(keys: list[AttemptKey]) -> agent_pb2.AgentMessage:
    msg = agent_pb2.AgentMessage()
    draining = msg.draining
    draining.SetInParent()
    add_ref = draining.not_started.add
    for job_id, task_id, attempt in keys:
        add_ref(job_id=job_id, task_id=task_id, attempt=attempt)
    return msg


class Agent:
    """One agent process's life: connect, run what is assigned, reconnect, drain.

    :meth:`run` returns only after a drain completes (SIGTERM or a Drain message, via
    :meth:`drain`); connection failures are retried for ever. Not thread-safe: use it from its
    event loop.
    """

    def __init__(
        self,
        config: AgentConfig,
        handlers: Mapping[str, Handler],
        *,
        observer: AttemptObserver | None = None,
    ) -> None:
        """``observer`` watches every attempt's run (traces, metrics: see ``telemetry``)."""
        self.config = config
        self.handlers = dict(handlers)
        self.runtime = Runtime(
            self.handlers,
            slots=config.slots,
            cpu_workers=config.cpu_workers,
            handler_slots=config.handler_slots,
            on_started=self._on_started,
            on_finished=self._on_finished,
            observer=observer,
            on_progress=self._on_progress,
        )
        self.max_epoch_seen = 0
        self.version = _version()
        self._load = LoadSampler()
        self._cpu_count, self._memory_bytes = machine_capacity()
        self._stream: _Stream | None = None
        self._started: list[_StartedItem] = []  # started since the last flush
        self._aging: list[_StartedItem] = []  # started before the last flush, not yet reported
        self._results: list[Outcome] = []
        self._progress: dict[AttemptKey, tuple[float, str]] = {}  # latest per attempt, unsent
        self._flush_scheduled = False
        self._draining = False
        self._drain_requested = asyncio.Event()
        self._next_address = 0
        # Leader discovery (issue #3): the leader etcd names, else a controller's redirect.
        self._leader = ""
        self._redirect = ""
        self._leader_changed = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def connected(self) -> bool:
        return self._stream is not None

    def drain(self, reason: str) -> None:
        """Stop taking work: give queued attempts back, finish running ones, report, close the
        stream, and let :meth:`run` return. Idempotent; returns at once."""
        if self._draining:
            return
        self._draining = True
        log.info(
            "draining (%s): %d attempts running, %d queued to give back",
            reason,
            self.runtime.running,
            self.runtime.queued,
        )
        self._drain_requested.set()

    async def aclose(self) -> None:
        """Stop running attempts without reporting them and shut the process pool down."""
        await self.runtime.aclose()

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Connect, serve and reconnect until a drain has completed."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        delay = cfg.backoff_initial_s
        idle_since: float | None = None
        while True:
            if self._draining and self.runtime.idle:
                if not self._results:
                    log.info("drained: nothing running and nothing left to report")
                    return
                now = loop.time()
                if idle_since is None:
                    idle_since = now
                elif now - idle_since >= cfg.drain_delivery_timeout_s:
                    log.warning(
                        "drained without a controller: %d results were not delivered; the "
                        "controller runs those tasks again",
                        len(self._results),
                    )
                    return
            address = self._next_controller()
            end = await self._connect(address)
            if end is _End.DRAINED:
                return
            if end is _End.BROKE or self._redirect:
                delay = cfg.backoff_initial_s
            else:
                self._next_address += 1
            pause = delay / 2 + random.uniform(0, delay / 2)
            log.debug("reconnecting in %.2f s", pause)
            if await self._pause(pause):
                delay = cfg.backoff_initial_s  # a new leader: go to it now, not after backoff
            else:
                delay = min(delay * 2, cfg.backoff_max_s)

    # ----------------------------------------------------------------- leader discovery

    def follow_leader(self, address: str) -> None:
        """The leader changed (as etcd says; "" when there is none): connect there next, at
        once. A stream to another controller is dropped, so the agent moves by itself; running
        attempts carry on and are reported to the new leader."""
        if address == self._leader:
            return
        self._leader = address
        self._leader_changed.set()
        stream = self._stream
        if address and stream is not None and stream.address != address:
            log.info("the leader is now %s; leaving %s", address, stream.address)
            stream.call.cancel()

    def _next_controller(self) -> str:
        """Where to connect: a redirect a standby just named, else the leader etcd names,
        else the configured addresses in turn."""
        if self._redirect:
            address, self._redirect = self._redirect, ""
            return address
        if self._leader:
            return self._leader
        cfg = self.config
        return cfg.controllers[self._next_address % len(cfg.controllers)]

    async def _pause(self, seconds: float) -> bool:
        """Sleep between connection attempts; a drain that starts meanwhile ends the sleep, so
        an idle agent without a controller exits at once on SIGTERM, and so does news of a new
        leader (then returns True)."""
        changed = self._leader_changed
        if changed.is_set():
            changed.clear()
            return True
        if self._draining:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), seconds)
        else:
            waits = [
                asyncio.ensure_future(self._drain_requested.wait()),
                asyncio.ensure_future(changed.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        if changed.is_set():
            changed.clear()
            return True
        return False

    async def _connect(self, address: str) -> _End:
        """Open one stream: Hello, Welcome, then serve it until it ends."""
        async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            try:
                await call.write(self._hello())
                first = await asyncio.wait_for(call.read(), self.config.welcome_timeout_s)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "controller %s did not welcome agent %s: %s: %s",
                    address,
                    self.config.agent_id,
                    exc.code().name,
                    exc.details(),
                )
                self._redirect = _leader_named(exc, address)
                return _End.FAILED
            except TimeoutError:
                log.warning(
                    "controller %s sent no Welcome within %.3g s; trying again",
                    address,
                    self.config.welcome_timeout_s,
                )
                call.cancel()
                return _End.FAILED
            except Exception as exc:  # a daemon must outlive surprises on one connection
                log.warning("connecting to controller %s failed: %r", address, exc)
                call.cancel()
                return _End.FAILED
            if first is grpc.aio.EOF or first.WhichOneof("msg") != "welcome":
                what = "closed the stream" if first is grpc.aio.EOF else "sent something else"
                log.warning("controller %s %s instead of Welcome; trying again", address, what)
                call.cancel()
                return _End.FAILED
            welcome = first.welcome
            if welcome.epoch < self.max_epoch_seen:
                log.warning(
                    "controller %s welcomed us with epoch %d, but epoch %d was seen: it is no "
                    "longer the leader; looking for the current one",
                    address,
                    welcome.epoch,
                    self.max_epoch_seen,
                )
                call.cancel()
                return _End.FAILED
            if self._leader and address != self._leader:
                # etcd named the leader while we were connecting elsewhere: go there instead.
                log.info("the leader is %s, not %s; moving", self._leader, address)
                call.cancel()
                return _End.BROKE
            self.max_epoch_seen = welcome.epoch
            log.info(
                "deerflow-agent %s connected to %s (epoch %d)",
                self.config.agent_id,
                address,
                welcome.epoch,
            )
            return await self._serve(_Stream(call, address, welcome))

    def _hello(self) -> agent_pb2.AgentMessage:
        cfg = self.config
        caps = self.runtime.slot_caps()
        msg = agent_pb2.AgentMessage()
        hello = msg.hello
        hello.agent_id = cfg.agent_id
        hello.token = cfg.token
        hello.slots = cfg.slots
        hello.cpu_count = self._cpu_count
        hello.memory_bytes = self._memory_bytes
        hello.max_epoch_seen = self.max_epoch_seen
        hello.version = self.version
        hello.labels.update(cfg.labels)
        for name, h in self.handlers.items():
            cap = caps[name]
            hello.handlers.add(
                name=name,
                kind=agent_pb2.CPU if h.kind is HandlerKind.CPU else agent_pb2.IO,
                slots=cap if cap < cfg.slots else 0,
                **h.hello_traits(),
            )
        for job_id, task_id, attempt in self.runtime.running_keys():
            hello.running.add(job_id=job_id, task_id=task_id, attempt=attempt)
        return msg

    async def _serve(self, stream: _Stream) -> _End:
        self._stream = stream
        if self._results:
            self._schedule_flush()  # results buffered while disconnected
        reader = asyncio.create_task(self._read_loop(stream))
        writer = asyncio.create_task(stream.write_loop())
        beats = asyncio.create_task(self._heartbeat_loop(stream))
        drainer = asyncio.create_task(self._drain_loop(stream))
        tasks = (reader, writer, beats, drainer)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stream.close_sent:
                try:
                    await asyncio.wait_for(
                        asyncio.wait([writer, reader]), self.config.close_timeout_s
                    )
                except TimeoutError:
                    log.warning("controller %s did not end the stream after drain", stream.address)
                log.info("drained: all results sent to %s, stream closed", stream.address)
                return _End.DRAINED
            self._log_break(stream, reader, writer, drainer, beats)
            return _End.FAILED if _failed_with(reader, _StaleEpoch) else _End.BROKE
        finally:
            self._stream = None
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stream.call.cancel()
            self._results[:0] = stream.unsent_outcomes()
            self._started.clear()
            self._aging.clear()
            dropped = self.runtime.take_queued()
            if dropped:
                log.info(
                    "dropped %d attempts that had not started; the controller reassigns them",
                    len(dropped),
                )

    def _log_break(self, stream: _Stream, *tasks: asyncio.Task[None]) -> None:
        reason = "the controller ended the stream"
        for t in tasks:
            if not t.done() or t.cancelled():
                continue
            exc = t.exception()
            if isinstance(exc, grpc.aio.AioRpcError):
                reason = f"{exc.code().name}: {exc.details()}"
            elif isinstance(exc, asyncio.InvalidStateError):
                reason = "the call already ended"
            elif isinstance(exc, _StaleEpoch):
                reason = str(exc)
            elif exc is not None:
                reason = f"{type(exc).__name__}: {exc}"
                log.error("stream task failed", exc_info=exc)
            break
        log.warning(
            "lost the stream to %s (%s); %d running attempts keep running and report on reconnect",
            stream.address,
            reason,
            self.runtime.running,
        )

    # ----------------------------------------------------------------- stream tasks

    async def _read_loop(self, stream: _Stream) -> None:
        """Apply controller messages until the controller ends the stream."""
        read = stream.call.read
        runtime = self.runtime
        while True:
            msg = await read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("msg")
            if kind == "assignments":
                self._on_assignments(stream, msg.assignments)
            elif kind == "cancels":
                runtime.cancel([(r.job_id, r.task_id, r.attempt) for r in msg.cancels.refs])
            elif kind == "drain":
                self.drain(f"the controller asked: {msg.drain.reason or 'no reason given'}")
            else:
                log.warning("ignoring an unexpected %s message from %s", kind, stream.address)

    def _on_assignments(self, stream: _Stream, batch: agent_pb2.AssignmentBatch) -> None:
        if batch.epoch < self.max_epoch_seen:
            raise _StaleEpoch(
                f"refused {len(batch.assignments)} assignments of epoch {batch.epoch}: epoch "
                f"{self.max_epoch_seen} was seen, so {stream.address} is no longer the leader"
            )
        self.max_epoch_seen = batch.epoch
        attempts = [attempt_from_assignment(a) for a in batch.assignments]
        if self._draining:
            # Sent before the controller saw our Draining: give them back the same way.
            log.info("draining: giving back %d assignments that arrived late", len(attempts))
            stream.send(_draining([a.key for a in attempts]))
            return
        self.runtime.submit(attempts)

    async def _heartbeat_loop(self, stream: _Stream) -> None:
        runtime = self.runtime
        while True:
            load = self._load.sample()
            msg = agent_pb2.AgentMessage()
            hb = msg.heartbeat
            hb.cpu_percent = load.cpu_percent
            hb.memory_percent = load.memory_percent
            hb.process_cpu_percent = load.process_cpu_percent
            hb.running = runtime.running
            hb.free_slots = 0 if self._draining else runtime.free_slots
            hb.queued = runtime.queued
            hb.handler_latency_s.update(runtime.latencies())
            stream.send(msg)
            await asyncio.sleep(stream.heartbeat_interval_s)

    async def _drain_loop(self, stream: _Stream) -> None:
        await self._drain_requested.wait()
        not_started = self.runtime.take_queued()
        stream.send(_draining(not_started))
        if not_started:
            log.info("draining: gave back %d attempts that had not started", len(not_started))
        await self.runtime.wait_idle()
        self._flush()
        stream.close()
        await asyncio.get_running_loop().create_future()  # _serve cancels this task

    # ----------------------------------------------------------------- reports

    def _on_started(self, key: AttemptKey, time: float) -> None:
        if self._stream is None:
            return  # the next Hello lists it as running
        self._started.append((key, time))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _on_finished(self, outcome: Outcome) -> None:
        self._results.append(outcome)
        if self._stream is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _on_progress(self, key: AttemptKey, fraction: float, message: str) -> None:
        """The runtime rate-limits progress per attempt; here reports of one loop turn are
        coalesced (latest per attempt) into one ProgressBatch. Dropped while disconnected: a
        reconnect lists running attempts in Hello, which is as good a sign of life."""
        if self._stream is None:
            return
        self._progress[key] = (fraction, message)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send what finished since the last flush, and what started before the last flush and
        is still running: at most one ResultBatch and one StartedBatch.

        Holding a Started back for one flush means a short attempt (one that ends in the next
        loop turn, like echo) is reported by its Result alone, which halves the messages of a
        stream of short tasks; a long attempt's Started is delayed by microseconds."""
        self._flush_scheduled = False
        stream = self._stream
        if stream is None:
            self._started.clear()
            self._aging.clear()
            self._progress.clear()
            return
        aging, fresh, results = self._aging, self._started, self._results
        if results and (aging or fresh):
            done = {o.key for o in results}
            aging = [s for s in aging if s[0] not in done]
            fresh = [s for s in fresh if s[0] not in done]
        self._aging = fresh
        self._started = []
        if aging:
            stream.send(_Started(aging))
        if results:
            self._results = []
            if not stream.send(_Results(results)):
                self._results[:0] = results
        if self._progress:
            progress, self._progress = self._progress, {}
            if results:
                for o in results:
                    progress.pop(o.key, None)  # the Result says more
            if progress:
                stream.send(_Progress([(k, f, m) for k, (f, m) in progress.items()]))
        if fresh:
            self._schedule_flush()


def _leader_named(exc: grpc.aio.AioRpcError, address: str) -> str:
    """The leader a standby named in its refusal (``deerflow-leader`` trailing metadata), if
    it is another controller."""
    for key, value in exc.trailing_metadata() or ():
        if key == "deerflow-leader" and isinstance(value, str) and value and value != address:
            return value
    return ""


def _failed_with(task: asyncio.Task[None], kind: type[BaseException]) -> bool:
    return task.done() and not task.cancelled() and isinstance(task.exception(), kind)
