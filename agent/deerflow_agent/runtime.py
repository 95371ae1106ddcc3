"""The handler runtime: admits attempts into slots, runs them, enforces timeouts and cancels.

No gRPC or protobuf here. The session feeds :class:`Attempt` objects in and receives
:class:`Outcome` objects through callbacks, so this module can be driven directly in tests.

Admission: an attempt starts when the agent has a free slot, its handler is under its own slot
cap, and (for cpu handlers) a process-pool worker is free. Among the attempts that could start,
the one received first starts first; an attempt whose handler is at its cap does not hold back
attempts of other handlers behind it.

Costs: one asyncio task per attempt and O(handlers) work per start; nothing scans all attempts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol, cast

from deerflow_common.errors import AttemptKey, ErrorClass, ErrorKind, TaskError

from ._handler import (
    FatalError,
    Handler,
    HandlerError,
    HandlerKind,
    IoHandlerFn,
    TaskContext,
    call_cpu_handler,
    coerce_output,
    cpu_target,
)

__all__ = [
    "PROGRESS_INTERVAL_S",
    "Attempt",
    "AttemptError",
    "AttemptKey",
    "AttemptObserver",
    "ErrorKind",
    "Outcome",
    "ProgressThrottle",
    "Runtime",
]

log = logging.getLogger(__name__)

LATENCY_EWMA_ALPHA = 0.2
"""Weight of the newest run in a handler's recent mean run time: about the last ten runs count."""

PROGRESS_INTERVAL_S = 0.5
"""Least time between two Progress reports of one attempt. Heartbeat timeouts are seconds or
more, so two reports a second keep any of them alive, while a handler that calls
``ctx.progress`` per item of a tight loop costs the stream two small messages a second."""


AttemptError = TaskError
"""How an attempt failed (the shared :class:`deerflow_common.errors.TaskError`)."""


@dataclass(slots=True)
class Outcome:
    """How an attempt ended. Times are Unix seconds. ``cancelled`` is set when the controller
    cancelled the attempt, whatever the handler did afterwards."""

    key: AttemptKey
    handler: str
    ok: bool
    output: bytes
    error: AttemptError | None
    started_at: float
    finished_at: float
    cancelled: bool = False
    metadata: Mapping[str, str] | None = None
    cpu_s: float = 0.0
    """CPU seconds the handler used: measured in the pool worker for cpu handlers; 0 (unknown)
    for io handlers, whose CPU time is spread over a loop shared with every other attempt."""
    rss_bytes: int = 0
    """Peak resident memory of the cpu worker that ran the attempt (a high-water mark over the
    worker's life, so an upper bound); 0 (unknown) for io handlers."""


ProgressReport = tuple[float, str]
"""(fraction 0-1 or -1 when unknown, message) of one TaskContext.progress call."""


class ProgressThrottle:
    """At most one progress report per attempt per ``interval_s``; a report that comes sooner is
    held, and the latest held report is sent when the interval has passed. Pure: the caller
    passes the time and arranges the wake-up.

    Memory: one entry per attempt that reported progress, until :meth:`forget`."""

    __slots__ = ("_pending", "_sent_at", "interval_s")

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._sent_at: dict[AttemptKey, float] = {}
        self._pending: dict[AttemptKey, ProgressReport] = {}

    def __bool__(self) -> bool:
        return bool(self._sent_at)

    def offer(self, key: AttemptKey, report: ProgressReport, now: float) -> tuple[bool, float]:
        """``(True, 0)``: send ``report`` now. ``(False, t)``: it is held; call :meth:`take` at
        time ``t`` (a positive t only for the first held report of an interval: later ones
        replace it and return ``(False, 0)``, as the wake-up is already arranged)."""
        sent_at = self._sent_at.get(key)
        if sent_at is None or now - sent_at >= self.interval_s:
            self._sent_at[key] = now
            self._pending.pop(key, None)
            return True, 0.0
        first = key not in self._pending
        self._pending[key] = report
        return False, sent_at + self.interval_s if first else 0.0

    def take(self, key: AttemptKey, now: float) -> ProgressReport | None:
        """The held report of ``key`` to send now, if any (its wake-up came)."""
        report = self._pending.pop(key, None)
        if report is not None:
            self._sent_at[key] = now
        return report

    def forget(self, key: AttemptKey) -> None:
        """The attempt ended: drop what is held (its Result supersedes any progress)."""
        self._sent_at.pop(key, None)
        self._pending.pop(key, None)


class Attempt:
    """One assignment as received, and its state on this agent while it is queued or running."""

    __slots__ = (
        "cancel_requested",
        "deadline",
        "handler",
        "key",
        "payload",
        "seq",
        "span",
        "started_at",
        "task",
        "timed_out",
        "timeout_s",
        "trace_context",
    )

    def __init__(
        self,
        key: AttemptKey,
        handler: str,
        payload: bytes,
        timeout_s: float = 0.0,
        trace_context: Mapping[str, str] | None = None,
    ) -> None:
        self.key = key
        self.handler = handler
        self.payload = payload
        self.timeout_s = timeout_s
        """Start-to-close limit in seconds; 0 or less means none."""
        self.trace_context = trace_context
        self.span: object = None
        """What an :class:`AttemptObserver` keeps about this attempt (its span), if anything."""
        self.seq = 0
        self.started_at = 0.0
        self.task: asyncio.Task[None] | None = None
        self.deadline = _INF  # event-loop time, set when an io attempt with a timeout starts
        self.cancel_requested = False
        self.timed_out = False

    def __repr__(self) -> str:
        job, task, n = self.key
        return f"Attempt({job}/{task}#{n}, {self.handler!r})"


class _Slot:
    """Per-handler state: its queue of received attempts, its cap and its recent latency."""

    __slots__ = ("cap", "cpu_target", "handler", "latency_s", "queue", "running")

    def __init__(self, handler: Handler, cap: int) -> None:
        self.handler = handler
        self.cap = cap
        self.running = 0
        self.queue: deque[Attempt] = deque()
        self.latency_s = -1.0  # no run yet
        self.cpu_target = cpu_target(handler) if handler.kind is HandlerKind.CPU else None


_INF = float("inf")
_TIMER_SLACK_S = 0.001  # loop timers may fire this early (uvloop rounds to milliseconds)
_CANCELLED = AttemptError(
    ErrorKind.CANCELLED_BY_CLIENT, "cancelled by the controller while running", retryable=False
)
_NOT_STARTED = AttemptError(
    ErrorKind.CANCELLED_BY_CLIENT, "cancelled by the controller before it started", retryable=False
)

StartedCallback = Callable[[AttemptKey, float], None]
FinishedCallback = Callable[[Outcome], None]
ProgressCallback = Callable[[AttemptKey, float, str], None]


class AttemptObserver(Protocol):
    """Cross-cutting concerns (traces, metrics) around each attempt's run.

    ``on_start`` is called just before the handler is started. ``child_context`` gives the
    trace context an io handler's ``TaskContext.trace_context`` shows, and is called only if
    the handler reads it (so a tracer names its span there without paying for it on every
    attempt). ``on_end`` is called when the attempt's outcome is reported, for attempts that
    started. All run synchronously on the loop, must be short and must not raise."""

    def on_start(self, a: Attempt) -> None: ...

    def child_context(self, a: Attempt) -> Mapping[str, str] | None: ...

    def on_end(self, a: Attempt, outcome: Outcome) -> None: ...


class Runtime:
    """Runs attempts of installed handlers within ``slots`` concurrent attempts.

    IO handlers run as asyncio tasks on the running loop; cpu handlers in a process pool of
    ``cpu_workers`` processes, created on the first cpu attempt with the "forkserver" start
    method ("spawn" where that is missing): never plain fork, since gRPC's threads do not survive
    it. ``on_started`` and ``on_finished`` are called synchronously from the loop, in order; they
    must not raise.

    Cancelling a running cpu attempt cannot interrupt its worker process: the attempt is reported
    (with ``cancelled=True``) when the function returns, and it holds its slot until then. A cpu
    attempt past its timeout is reported TIMEOUT at the deadline but also holds its slot and its
    worker until the function returns.

    ``handler_slots`` overrides handlers' own slot caps by name (``--handler-slots llm=3``): a
    per-process cap like DeerFlow 2.0's LLM concurrency limit. Raises ValueError for a name that
    is not installed or a cap below 1.

    ``on_progress(key, fraction, message)`` receives io handlers' ``ctx.progress`` reports of
    running attempts, at most one per attempt per ``progress_interval_s`` (the latest wins),
    synchronously from the loop; none after the attempt's outcome. Without it, progress calls
    are dropped. Cpu handlers report no progress (their function has no context).
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        slots: int,
        cpu_workers: int,
        on_started: StartedCallback,
        on_finished: FinishedCallback,
        max_output_bytes: int = 32 << 20,
        handler_slots: Mapping[str, int] | None = None,
        observer: AttemptObserver | None = None,
        on_progress: ProgressCallback | None = None,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        overrides = dict(handler_slots or {})
        for name, n in overrides.items():
            if name not in handlers:
                offered = ", ".join(sorted(handlers)) or "none"
                raise ValueError(
                    f"a slot cap was given for {name!r}, which is not installed (installed: "
                    f"{offered})"
                )
            if n < 1:
                raise ValueError(f"the slot cap of handler {name!r} must be at least 1, got {n}")
        if cpu_workers < 1:
            raise ValueError(f"cpu_workers must be at least 1, got {cpu_workers}")
        self.slots = slots
        self.cpu_workers = cpu_workers
        self._on_started = on_started
        self._on_finished = on_finished
        self._on_progress = on_progress
        self._throttle = ProgressThrottle(progress_interval_s)
        self._observer = observer
        self._child_context = observer.child_context if observer is not None else None
        self._max_output_bytes = max_output_bytes
        self._handlers: dict[str, _Slot] = {}
        for name, h in handlers.items():
            cap = min(overrides.get(name) or h.slots or slots, slots)
            if h.kind is HandlerKind.CPU:
                cap = min(cap, cpu_workers)
            self._handlers[name] = _Slot(h, cap)
        self._known: dict[AttemptKey, Attempt] = {}  # queued or running, not yet reported
        self._in_use = 0  # slots taken, including cpu attempts reported but still in a worker
        self._cpu_in_use = 0
        self._queued = 0
        self._seq = 0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # every attempt's task until it ends
        # Start-to-close timeouts of io attempts: one loop timer for the earliest deadline among
        # running attempts instead of one per attempt (a timer each costs as much as the rest of
        # an echo attempt). Deadlines of later starts are later, so it rarely needs re-arming.
        self._timed: set[Attempt] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _INF
        self._closed = False

    # ----------------------------------------------------------------- introspection

    def slot_caps(self) -> dict[str, int]:
        """Each handler's effective cap on concurrent attempts."""
        return {name: s.cap for name, s in self._handlers.items()}

    @property
    def running(self) -> int:
        """Slots taken by running attempts."""
        return self._in_use

    @property
    def queued(self) -> int:
        """Attempts received and not started."""
        return self._queued

    @property
    def free_slots(self) -> int:
        return self.slots - self._in_use

    @property
    def idle(self) -> bool:
        return self._in_use == 0 and self._queued == 0

    def running_keys(self) -> list[AttemptKey]:
        """Attempts started and not yet reported."""
        return [k for k, a in self._known.items() if a.task is not None]

    def latencies(self) -> dict[str, float]:
        """Recent mean run time per handler in seconds (an EWMA); handlers never run are absent."""
        return {name: s.latency_s for name, s in self._handlers.items() if s.latency_s >= 0}

    async def wait_idle(self) -> None:
        """Block until nothing is queued or running (cpu workers still busy count as running)."""
        if self.idle:
            return
        fut = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        await fut

    # ----------------------------------------------------------------- commands

    def submit(self, attempts: Iterable[Attempt]) -> None:
        """Queue attempts in the order given and start as many as capacity allows. An attempt
        for a handler this agent lacks is reported at once as UNKNOWN_HANDLER; a duplicate of an
        attempt already here is ignored."""
        handlers = self._handlers
        known = self._known
        for a in attempts:
            slot = handlers.get(a.handler)
            if slot is None:
                self._report_unknown(a)
                continue
            if a.key in known:
                log.warning("ignoring a second assignment of %r: it is already here", a)
                continue
            self._seq += 1
            a.seq = self._seq
            known[a.key] = a
            slot.queue.append(a)
            self._queued += 1
        self._pump()

    def cancel(self, keys: Iterable[AttemptKey]) -> None:
        """Cancel attempts. Queued ones are dropped and reported cancelled at once; running io
        ones are cancelled and reported when their task unwinds; running cpu ones are reported
        when their worker returns. Unknown keys (already reported) are ignored."""
        for key in keys:
            a = self._known.get(key)
            if a is None:
                continue
            a.cancel_requested = True
            if a.task is None:
                self._handlers[a.handler].queue.remove(a)
                self._queued -= 1
                del self._known[key]
                now = time.time()
                outcome = Outcome(key, a.handler, False, b"", _NOT_STARTED, now, now, True)
                self._report(outcome)
            elif self._handlers[a.handler].handler.kind is HandlerKind.IO:
                a.task.cancel()
        self._check_idle()

    def take_queued(self) -> list[AttemptKey]:
        """Remove every attempt that has not started and return their keys, oldest first (for
        Draining, or when the stream breaks and the controller reassigns them)."""
        taken: list[Attempt] = []
        for slot in self._handlers.values():
            taken.extend(slot.queue)
            slot.queue.clear()
        taken.sort(key=lambda a: a.seq)
        for a in taken:
            del self._known[a.key]
        self._queued = 0
        self._check_idle()
        return [a.key for a in taken]

    async def aclose(self) -> None:
        """Stop: cancel running io attempts without reporting them, cancel the pool's queued
        calls and wait (off the loop) for its workers to finish the ones they run."""
        self._closed = True
        self.take_queued()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            # The interpreter's exit would wait for the workers anyway; waiting here also ends
            # the pool's manager thread, which, left running, races CPython's exit hook on
            # their shared wakeup pipe (before 3.12.8: "Exception ignored in: <module
            # 'threading'> ... OSError: [Errno 9] Bad file descriptor").
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def report_progress(self, key: AttemptKey, fraction: float, message: str) -> None:
        """A running io attempt's ``ctx.progress`` (see :class:`ProgressSink`): passed on to
        ``on_progress`` now, or held until the attempt's interval has passed. Reports of
        attempts that are not running (ended, cancelled, or after :meth:`aclose`) are dropped."""
        on_progress = self._on_progress
        if on_progress is None or self._closed:
            return
        a = self._known.get(key)
        if a is None or a.task is None:
            return
        loop = asyncio.get_running_loop()
        send, wake_at = self._throttle.offer(key, (fraction, message), loop.time())
        if send:
            on_progress(key, fraction, message)
        elif wake_at:
            loop.call_at(wake_at, self._send_held_progress, key)

    def _send_held_progress(self, key: AttemptKey) -> None:
        if self._closed or self._on_progress is None or key not in self._known:
            return
        report = self._throttle.take(key, asyncio.get_running_loop().time())
        if report is not None:
            self._on_progress(key, *report)

    # ----------------------------------------------------------------- admission

    def _pump(self) -> None:
        """Start queued attempts while capacity allows, oldest admissible first."""
        if self._closed:
            return
        handlers = self._handlers
        while self._queued and self._in_use < self.slots:
            best: _Slot | None = None
            best_seq = 0
            for slot in handlers.values():
                q = slot.queue
                if not q or slot.running >= slot.cap:
                    continue
                if slot.cpu_target is not None and self._cpu_in_use >= self.cpu_workers:
                    continue
                seq = q[0].seq
                if best is None or seq < best_seq:
                    best, best_seq = slot, seq
            if best is None:
                return
            self._start(best, best.queue.popleft())

    def _start(self, slot: _Slot, a: Attempt) -> None:
        self._queued -= 1
        self._in_use += 1
        slot.running += 1
        a.started_at = now = time.time()
        if self._observer is not None:
            self._observer.on_start(a)
        if slot.cpu_target is None:
            loop = asyncio.get_running_loop()
            if a.timeout_s > 0:
                a.deadline = deadline = loop.time() + a.timeout_s
                self._timed.add(a)
                if deadline < self._timer_at:
                    self._arm_timer(deadline)
            a.task = task = loop.create_task(self._run_io(slot, a))
        else:
            self._cpu_in_use += 1
            a.task = task = asyncio.get_running_loop().create_task(self._run_cpu(slot, a))
        self._tasks.add(task)
        self._on_started(a.key, now)

    def _release(self, slot: _Slot, a: Attempt) -> None:
        if a.task is not None:
            self._tasks.discard(a.task)
        self._timed.discard(a)
        self._in_use -= 1
        slot.running -= 1
        if slot.cpu_target is not None:
            self._cpu_in_use -= 1
        elapsed = time.time() - a.started_at
        old = slot.latency_s
        slot.latency_s = elapsed if old < 0 else old + LATENCY_EWMA_ALPHA * (elapsed - old)
        self._pump()
        self._check_idle()

    def _check_idle(self) -> None:
        if self._idle_waiters and self.idle:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # ----------------------------------------------------------------- running

    async def _run_io(self, slot: _Slot, a: Attempt) -> None:
        h = slot.handler
        job_id, task_id, attempt = a.key
        observer = self._observer
        ctx = TaskContext(
            job_id,
            task_id,
            attempt,
            a.deadline,
            h.name,
            a.trace_context if observer is None else None,
            self if self._on_progress is not None else None,
            child_context=self._child_context,
            child_of=a,
        )
        try:
            try:
                value = await cast(IoHandlerFn, h.fn)(ctx, a.payload)
            except asyncio.CancelledError:
                if self._closed or not (a.cancel_requested or a.timed_out):
                    raise
                if a.cancel_requested:
                    self._fail(a, _CANCELLED)
                else:
                    self._fail(a, _timeout_error(h.name, a.timeout_s))
            except Exception as exc:
                self._fail(a, _error_from(h, exc), _metadata_from(exc))
            else:
                self._succeed(a, value)
        finally:
            self._release(slot, a)

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        """Cancel running io attempts past their deadline; re-arm for the next one. O(running
        attempts with a timeout), which slots bound."""
        self._timer, self._timer_at = None, _INF
        now = asyncio.get_running_loop().time()
        upcoming = _INF
        for a in list(self._timed):
            if a.deadline <= now + _TIMER_SLACK_S:
                self._timed.discard(a)
                a.timed_out = True
                if a.task is not None:
                    a.task.cancel()
            elif a.deadline < upcoming:
                upcoming = a.deadline
        if upcoming < _INF:
            self._arm_timer(upcoming)

    async def _run_cpu(self, slot: _Slot, a: Attempt) -> None:
        h = slot.handler
        assert slot.cpu_target is not None
        module, qualname = slot.cpu_target
        try:
            try:
                fut = asyncio.get_running_loop().run_in_executor(
                    self._cpu_pool(), call_cpu_handler, module, qualname, a.payload
                )
                if a.timeout_s <= 0:
                    value, cpu_s, rss_bytes = await fut
                else:
                    done, _ = await asyncio.wait([fut], timeout=a.timeout_s)
                    if not done:
                        self._fail(a, _timeout_error(h.name, a.timeout_s))
                        log.warning(
                            "cpu handler %r ran past its %.3g s timeout on %r; its worker stays "
                            "busy (and its slot taken) until the function returns",
                            h.name,
                            a.timeout_s,
                            a,
                        )
                        await asyncio.wait([fut])
                        return
                    value, cpu_s, rss_bytes = fut.result()
            except BrokenProcessPool as exc:
                self._discard_pool()
                self._fail(a, _broken_pool_error(h.name, exc))
            except Exception as exc:
                self._fail(a, _error_from(h, exc), _metadata_from(exc))
            else:
                self._succeed(a, value, cpu_s, rss_bytes)
        finally:
            self._release(slot, a)

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _cpu_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            method = "forkserver" if "forkserver" in methods else "spawn"
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.cpu_workers, mp_context=multiprocessing.get_context(method)
            )
            log.info("started a %s process pool of %d cpu workers", method, self.cpu_workers)
        return self._pool

    # ----------------------------------------------------------------- reporting

    def _succeed(self, a: Attempt, value: object, cpu_s: float = 0.0, rss_bytes: int = 0) -> None:
        try:
            result = coerce_output(a.handler, value)
        except FatalError as exc:
            self._fail(a, AttemptError(ErrorKind.FATAL, exc.message, retryable=False))
            return
        output = result.output
        if len(output) > self._max_output_bytes:
            message = (
                f"handler {a.handler!r} returned {len(output)} bytes, more than the agent's "
                f"limit of {self._max_output_bytes}; store large outputs elsewhere and return a "
                "reference"
            )
            self._fail(a, AttemptError(ErrorKind.FATAL, message, retryable=False))
            return
        self._report(
            Outcome(
                a.key,
                a.handler,
                True,
                output,
                None,
                a.started_at,
                time.time(),
                a.cancel_requested,
                _clean(result.metadata) if result.metadata else None,
                cpu_s,
                rss_bytes,
            )
        )

    def _fail(
        self, a: Attempt, error: AttemptError, metadata: Mapping[str, str] | None = None
    ) -> None:
        self._report(
            Outcome(
                a.key,
                a.handler,
                False,
                b"",
                error,
                a.started_at,
                time.time(),
                a.cancel_requested,
                metadata or None,
            )
        )

    def _report(self, outcome: Outcome) -> None:
        a = self._known.pop(outcome.key, None)
        if self._throttle:
            self._throttle.forget(outcome.key)
        if a is not None and a.task is not None and self._observer is not None:
            self._observer.on_end(a, outcome)
        self._on_finished(outcome)

    def _report_unknown(self, a: Attempt) -> None:
        offered = ", ".join(sorted(self._handlers)) or "none"
        error = AttemptError(
            ErrorKind.UNKNOWN_HANDLER,
            f"this agent has no handler {a.handler!r} (it offers: {offered})",
            retryable=False,
        )
        now = time.time()
        self._on_finished(Outcome(a.key, a.handler, False, b"", error, now, now))


def _timeout_error(name: str, timeout_s: float) -> AttemptError:
    return AttemptError(
        ErrorKind.TIMEOUT,
        f"handler {name!r} did not finish within its start-to-close timeout of {timeout_s:.3g} s",
        retryable=True,
        error_class=ErrorClass.TIMEOUT,
    )


def _broken_pool_error(name: str, exc: BaseException) -> AttemptError:
    return AttemptError(
        ErrorKind.HANDLER_ERROR,
        f"the process pool running cpu handler {name!r} broke ({exc}); a worker probably died "
        "(out of memory?); the pool is restarted for the next attempt",
        retryable=True,
        error_class=ErrorClass.TRANSIENT,
    )


def _metadata_from(exc: Exception) -> dict[str, str] | None:
    """The provider signals a failed handler attached to its HandlerError or FatalError."""
    if isinstance(exc, HandlerError | FatalError) and exc.metadata:
        return _clean(exc.metadata)
    return None


def _clean(metadata: Mapping[str, str]) -> dict[str, str]:
    # The wire map takes strings only; one handler's stray int must not break the stream.
    return {str(k): v if isinstance(v, str) else str(v) for k, v in metadata.items()}


def _error_from(h: Handler, exc: Exception) -> AttemptError:
    """Map what a handler raised to the error reported for the attempt."""
    if isinstance(exc, FatalError):
        return AttemptError(
            ErrorKind.FATAL, exc.message, retryable=False, error_class=exc.error_class
        )
    if isinstance(exc, HandlerError):
        kind = ErrorKind.HANDLER_ERROR if exc.retryable else ErrorKind.FATAL
        return AttemptError(kind, exc.message, exc.retryable, exc.retry_after_s, exc.error_class)
    return AttemptError(
        ErrorKind.HANDLER_ERROR,
        f"handler {h.name!r} raised {type(exc).__name__}: {exc}",
        retryable=True,
    )
