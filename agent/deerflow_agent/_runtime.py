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
import dataclasses
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures.process import BrokenProcessPool
from typing import cast

from deerflow_common.errors import AttemptKey, ErrorKind

from ._attempt import (
    CANCELLED,
    NOT_STARTED,
    Attempt,
    AttemptError,
    AttemptObserver,
    FinishedCallback,
    Outcome,
    ProgressCallback,
    StartedCallback,
    broken_pool_error,
    clean_metadata,
    error_from,
    metadata_from,
    timeout_error,
)
from ._context import TaskContext
from ._cpu import call_cpu_handler
from ._errors import FatalError
from ._handler import Handler, HandlerKind, IoHandlerFn, coerce_output, cpu_target
from ._inputs import InputFetcher, resolve_inputs
from ._netpolicy import STRICT, AddressPolicy
from ._progress import PROGRESS_INTERVAL_S, ProgressThrottle
from ._redact import environment_secrets, payload_secrets, redact

__all__ = ["LATENCY_EWMA_ALPHA", "Runtime"]

log = logging.getLogger(__name__)

LATENCY_EWMA_ALPHA = 0.2
"""Weight of the newest run in a handler's recent mean run time: about the last ten runs count."""


def _cpu_inputs_error(name: str) -> AttemptError:
    return AttemptError(
        ErrorKind.FATAL,
        f"task asks for inputs, but handler {name!r} is a cpu handler, which gets no context "
        "to read them; read them in an io handler (ctx.inputs) and pass what the cpu work "
        "needs in its payload, or run it with asyncio.to_thread",
        retryable=False,
    )


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

    ``fetch_input`` fetches the inputs an assignment carries by reference, in the attempt's slot
    and within its timeout, before its io handler is called. Cpu handlers get no inputs: an
    attempt of one that carries inputs fails FATAL (its function has no context to read them).

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
        fetch_input: InputFetcher | None = None,
        address_policy: AddressPolicy = STRICT,
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
        self._fetch_input = fetch_input
        self._address_policy = address_policy
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
                outcome = Outcome(key, a.handler, False, b"", NOT_STARTED, now, now, True)
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
            address_policy=self._address_policy,
            payload=a.payload,
        )
        try:
            try:
                if a.inputs:
                    ctx.inputs = await resolve_inputs(a.key, a.inputs, self._fetch_input)
                value = await cast(IoHandlerFn, h.fn)(ctx, a.payload)
            except asyncio.CancelledError:
                if self._closed or not (a.cancel_requested or a.timed_out):
                    raise
                if a.cancel_requested:
                    self._fail(a, CANCELLED)
                else:
                    self._fail(a, timeout_error(h.name, a.timeout_s))
            except Exception as exc:
                self._fail(a, error_from(h, exc), metadata_from(exc))
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
            if a.inputs:
                self._fail(a, _cpu_inputs_error(h.name))
                return
            try:
                fut = asyncio.get_running_loop().run_in_executor(
                    self._cpu_pool(), call_cpu_handler, module, qualname, a.payload
                )
                if a.timeout_s <= 0:
                    value, cpu_s, rss_bytes = await fut
                else:
                    done, _ = await asyncio.wait([fut], timeout=a.timeout_s)
                    if not done:
                        self._fail(a, timeout_error(h.name, a.timeout_s))
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
                self._fail(a, broken_pool_error(h.name, exc))
            except Exception as exc:
                self._fail(a, error_from(h, exc), metadata_from(exc))
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
                clean_metadata(result.metadata) if result.metadata else None,
                cpu_s,
                rss_bytes,
            )
        )

    def _fail(
        self, a: Attempt, error: AttemptError, metadata: Mapping[str, str] | None = None
    ) -> None:
        # Secrets of the payload (and the agent's own keys) never leave in an error: the
        # message reaches logs, spans, the dashboard and the client (see _redact).
        secrets = payload_secrets(a.payload) + environment_secrets()
        if secrets:
            message = redact(error.message, secrets)
            if message != error.message:
                error = dataclasses.replace(error, message=message)
            if metadata:
                metadata = {k: redact(v, secrets) for k, v in metadata.items()}
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
