"""The agent's stream to the controller: hello, welcome, assignments in, reports out, drain.

Follows ``deerflow_protos/agent.proto``. One :class:`Agent` lives as long as the process; it
opens one stream at a time (a :class:`Stream`) and opens another when one breaks, while the
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
``call.write`` and merges what is queued (``_stream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib.metadata
import logging
import secrets
from collections.abc import Mapping, Sequence

import grpc

from deerflow_common import channel_options
from deerflow_common.backoff import EQUAL_JITTER, Backoff
from deerflow_common.errors import AttemptKey
from deerflow_common.tls import TlsError, aio_channel
from deerflow_common.tracing import TRACEPARENT, context_dict
from deerflow_protos import agent_pb2, agent_pb2_grpc

from ._attempt import Attempt, AttemptObserver, Outcome
from ._config import AgentConfig
from ._fetch import fetch_input
from ._handler import Handler, HandlerKind
from ._inputs import InputRef
from ._load import LoadSampler, machine_capacity
from ._netpolicy import AddressPolicy
from ._refusals import RefusalLog
from ._runtime import Runtime
from ._stream import (
    Progress,
    Results,
    Started,
    StartedItem,
    Stream,
    draining_message,
)

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
    inputs = (
        tuple(InputRef(i.task_id, i.data, i.size, i.reference, i.sha256) for i in a.inputs)
        if a.inputs
        else ()
    )
    key = (ref.job_id, ref.task_id, ref.attempt)
    return Attempt(key, a.handler, a.payload, a.timeout_s, tc, inputs)


class _End(enum.Enum):
    DRAINED = "drained"  # drain finished and the stream closed cleanly: exit
    BROKE = "broke"  # the stream worked, then broke: try the same controller again first
    FAILED = "failed"  # no Welcome, or a stale leader: try the next controller


class _StaleEpoch(Exception):
    pass


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
        load: LoadSampler | None = None,
        extra_channel_options: Sequence[tuple[str, int]] = (),
    ) -> None:
        """``observer`` watches every attempt's run (traces, metrics: see ``telemetry``).
        ``load`` samples what heartbeats carry (default: its own; agents sharing a process may
        share one). ``extra_channel_options`` are added to each stream's channel options."""
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
            fetch_input=self._fetch_input,
            address_policy=AddressPolicy.parse(config.http_allow),
        )
        self._channel: grpc.aio.Channel | None = None
        self._refusals = RefusalLog()
        """The channel of the current stream: inputs sent by reference are fetched on it."""
        self.max_epoch_seen = 0
        self.instance = secrets.token_hex(16)
        """This process's secret (Hello.instance): the controller lets a new stream under our
        id replace a live one, and serves FetchInput, only with it. Never logged."""
        self.version = _version()
        self._load = load if load is not None else LoadSampler()
        self._channel_options = [*channel_options(), *extra_channel_options]
        self._cpu_count, self._memory_bytes = machine_capacity()
        self._stream: Stream | None = None
        self._started: list[StartedItem] = []  # started since the last flush
        self._aging: list[StartedItem] = []  # started before the last flush, not yet reported
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
        backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, jitter=EQUAL_JITTER)
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
                backoff.reset()
            else:
                self._next_address += 1
            pause = backoff.delay()
            log.debug("reconnecting in %.2f s", pause)
            if await self._pause(pause):
                backoff.reset()  # a new leader: go to it now, not after backoff

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
        try:
            # TLS files are read at each connection, so replaced ones are used from the next.
            opened = aio_channel(address, self.config.tls, self._channel_options)
        except TlsError as exc:
            log.warning("cannot connect to controller %s: %s", address, exc)
            return _End.FAILED
        async with opened as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=self._auth())
            try:
                await call.write(self._hello())
                first = await asyncio.wait_for(call.read(), self.config.welcome_timeout_s)
            except grpc.aio.AioRpcError as exc:
                self._refusals.refused(
                    self.config.agent_id, address, exc.code().name, exc.details() or ""
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
            self._refusals.welcomed()
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
            self._channel = channel
            try:
                return await self._serve(Stream(call, address, welcome))
            finally:
                self._channel = None

    def _hello(self) -> agent_pb2.AgentMessage:
        cfg = self.config
        caps = self.runtime.slot_caps()
        msg = agent_pb2.AgentMessage()
        hello = msg.hello
        hello.agent_id = cfg.agent_id
        # The join token travels as call metadata (checked before the stream is read), never
        # in Hello: Hello.token stays empty.
        hello.slots = cfg.slots
        hello.cpu_count = self._cpu_count
        hello.memory_bytes = self._memory_bytes
        hello.max_epoch_seen = self.max_epoch_seen
        hello.version = self.version
        hello.instance = self.instance
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

    async def _serve(self, stream: Stream) -> _End:
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

    def _log_break(self, stream: Stream, *tasks: asyncio.Task[None]) -> None:
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

    async def _read_loop(self, stream: Stream) -> None:
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

    def _auth(self) -> tuple[tuple[str, str], ...]:
        """The join token as call metadata (what the controller checks; see SECURITY.md)."""
        token = self.config.token
        return (("authorization", f"Bearer {token}"),) if token else ()

    async def _fetch_input(self, key: AttemptKey, ref: InputRef) -> bytes:
        stream = self._stream
        return await fetch_input(
            self._channel,
            stream.address if stream else "",
            key,
            ref,
            metadata=self._auth(),
            who=(self.config.agent_id, self.instance),
        )

    def _on_assignments(self, stream: Stream, batch: agent_pb2.AssignmentBatch) -> None:
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
            stream.send(draining_message([a.key for a in attempts]))
            return
        self.runtime.submit(attempts)

    async def _heartbeat_loop(self, stream: Stream) -> None:
        runtime = self.runtime
        while True:
            load = self._load.sample()
            heartbeat = agent_pb2.Heartbeat(
                cpu_percent=load.cpu_percent,
                memory_percent=load.memory_percent,
                process_cpu_percent=load.process_cpu_percent,
                running=runtime.running,
                free_slots=0 if self._draining else runtime.free_slots,
                queued=runtime.queued,
                handler_latency_s=runtime.latencies(),
            )
            stream.send(agent_pb2.AgentMessage(heartbeat=heartbeat))
            await asyncio.sleep(stream.heartbeat_interval_s)

    async def _drain_loop(self, stream: Stream) -> None:
        await self._drain_requested.wait()
        not_started = self.runtime.take_queued()
        stream.send(draining_message(not_started))
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

    def results_urgent(self) -> bool:
        """Whether results flushed now skip the stream's write interval: when nothing waits in
        this agent's queue, a freed slot stays idle until the controller hears of the result
        (a lone result, the last of a job, every result of a one-slot agent), so holding it
        back costs a round trip's worth of throughput. While attempts are queued the slots
        refill locally and results keep sharing messages at the paced rate."""
        return self.runtime.queued == 0

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
            stream.send(Started(aging))
        if results:
            self._results = []
            if not stream.send(Results(results), urgent=self.results_urgent()):
                self._results[:0] = results
        if self._progress:
            progress, self._progress = self._progress, {}
            if results:
                for o in results:
                    progress.pop(o.key, None)  # the Result says more
            if progress:
                stream.send(Progress([(k, f, m) for k, (f, m) in progress.items()]))
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
