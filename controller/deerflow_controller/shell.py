"""The I/O shell around the pure core: feeds it events with the current time and carries out its
decisions (assignment and cancel messages to agents' streams, wake-ups of job watchers).

All of it runs on one event loop. Scheduler calls are synchronous and short; the decisions they
produce are flushed once per loop turn (``call_soon``), so everything that arrived in one turn,
from any stream, leaves in one message per agent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from deerflow_protos import agent_pb2

from . import wire
from .cache import ResultCache
from .cache_file import CacheSaver
from .config import ControllerConfig
from .model import Task
from .ratelimit import RateLimiter
from .scheduler import Outbox, Scheduler
from .splitters import local_split_functions

log = logging.getLogger(__name__)


class SchedulerReplaced(Exception):
    """A call outlived the scheduler it served: this controller stopped leading (HA) and
    dropped its state (:meth:`Shell.replace_scheduler`). The job lives on with the next leader;
    the leader gate ends the call with UNAVAILABLE and a pointer to it."""


class ShellInterceptor(Protocol):
    """Cross-cutting concerns (metrics, traces) that watch the shell carry out decisions.

    Both calls happen synchronously inside :meth:`Shell.flush` and must be short and must not
    raise: ``on_decisions`` sees each outbox before anything leaves (its ``touched_jobs`` name
    the jobs with new events); ``on_assignments`` sees each agent's tasks before their message
    is made, and may return one W3C ``traceparent`` per task (a tracer's span for the wait),
    which the assignments carry instead of their submitter's context."""

    def on_decisions(self, out: Outbox) -> None: ...

    def on_assignments(self, tasks: Sequence[Task]) -> Sequence[str] | None: ...


@dataclass(eq=False)
class AgentSession:
    """The controller's side of one agent's stream: an outbound mailbox drained by one writer."""

    agent_id: str
    outbound: collections.deque[agent_pb2.ControllerMessage] = field(
        default_factory=collections.deque
    )
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def send(self, msg: agent_pb2.ControllerMessage) -> None:
        if not self.closed:
            self.outbound.append(msg)
            self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Shell:
    """Owns the scheduler and everything that reacts to its decisions."""

    def __init__(self, config: ControllerConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        cache_config = config.cache
        if cache_config is not None and config.cache_file and not cache_config.track_changes:
            cache_config = dataclasses.replace(cache_config, track_changes=True)
        self.cache = ResultCache(cache_config) if cache_config is not None else None
        self.scheduler = Scheduler(
            config.scheduler,
            limiter=RateLimiter(config.limits),
            split_functions=local_split_functions,
            cache=self.cache,
        )
        self._cache_saver: CacheSaver | None = None
        local_split_functions("")  # load the installed handlers now, not on the first submit
        self.sessions: dict[str, AgentSession] = {}
        self.started_at = clock()
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._membership = asyncio.Condition()
        self._flush_pending = False
        self._timer_wake = asyncio.Event()
        self._timer_target = float("inf")
        self._rate_samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=11)
        self._timer_task: asyncio.Task[None] | None = None
        self.interceptors: list[ShellInterceptor] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._timer_task = asyncio.get_running_loop().create_task(self._timer_loop())
        if self.cache is not None and self.config.cache_file:
            self._cache_saver = CacheSaver(self.cache, self.config.cache_file, self.clock)
            self._cache_saver.start()

    async def stop(self) -> None:
        if self._cache_saver is not None:
            await self._cache_saver.stop()
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        for session in self.sessions.values():
            session.close()

    # ------------------------------------------------------------------ flushing decisions

    assignment_messages = 0
    """AssignmentBatch messages sent: with ``assignments_sent``, the batcher's mean batch size
    (one message per agent per event-loop turn, so batches grow with the rate by themselves)."""
    assignments_sent = 0

    def changed(self) -> None:
        """Call after feeding the scheduler: decisions leave once at the end of this loop turn."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        out = self.scheduler.take()
        interceptors = self.interceptors
        for hook in interceptors:
            hook.on_decisions(out)
        epoch = self.config.epoch
        for agent_id, tasks in out.assignments.items():
            session = self.sessions.get(agent_id)
            if session is not None:
                traceparents = None
                for hook in interceptors:
                    traceparents = hook.on_assignments(tasks) or traceparents
                session.send(wire.assignment_batch(epoch, tasks, traceparents))
                self.assignment_messages += 1
                self.assignments_sent += len(tasks)
        for agent_id, keys in out.cancels.items():
            session = self.sessions.get(agent_id)
            if session is not None:
                session.send(wire.cancel_batch(keys))
        for notice in out.notices:
            log.info("%s", notice)
        for job_id in out.touched_jobs:
            self._wake_watchers(job_id)
        for job_id in out.expired_jobs:
            self._wake_watchers(job_id)
        for agent_id in out.disconnects:
            session = self.sessions.pop(agent_id, None)
            if session is not None:
                log.warning("agent %s sent nothing for too long; closing its stream", agent_id)
                session.close()
        nxt = self.scheduler.next_timer()
        if nxt is not None and nxt < self._timer_target:
            self._timer_wake.set()

    def replace_scheduler(self, scheduler: Scheduler) -> None:
        """Swap in ``scheduler`` (HA: each leadership term starts empty) and wake every job
        watcher, so that watches of the old scheduler's jobs end now (``SchedulerReplaced``)
        instead of waiting for an event that will never come."""
        self.scheduler = scheduler
        for job_id in list(self._watchers):
            self._wake_watchers(job_id)

    # ------------------------------------------------------------------ watchers

    def watch(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        return event

    def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._watchers[job_id]

    def _wake_watchers(self, job_id: str) -> None:
        for event in self._watchers.get(job_id, ()):
            event.set()

    # ------------------------------------------------------------------ membership

    async def membership_changed(self) -> None:
        async with self._membership:
            self._membership.notify_all()

    async def wait_for_agents(self, count: int) -> None:
        """Block until at least ``count`` agents are connected (cancelled by the caller's
        deadline)."""
        await self.wait_for_membership(lambda: len(self.scheduler.agents) >= count)

    async def wait_for_membership(self, ready: Callable[[], bool]) -> None:
        """Block until ``ready()`` is true, testing it now and whenever an agent joins or
        leaves (cancelled by the caller's deadline)."""
        async with self._membership:
            await self._membership.wait_for(ready)

    # ------------------------------------------------------------------ stats

    def completed_total(self) -> int:
        c = self.scheduler.counters
        return c.succeeded + c.failed + c.cancelled + c.timed_out

    def completed_per_s(self) -> float:
        samples = self._rate_samples
        if len(samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    # ------------------------------------------------------------------ timers

    async def _timer_loop(self) -> None:
        """Tick the core when its earliest timer is due (at least once a second, which also
        samples the completion rate)."""
        next_sample = self.clock()
        while True:
            now = self.clock()
            nxt = self.scheduler.next_timer()
            target = min(nxt if nxt is not None else now + 1.0, now + 1.0, next_sample)
            self._timer_target = target
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), max(0.0, target - now))
            self._timer_wake.clear()
            now = self.clock()
            if now >= next_sample:
                self._rate_samples.append((now, self.completed_total()))
                next_sample = now + 1.0
            try:
                self.scheduler.tick(now)
            except Exception:  # a bug in the core must not stop time for every job
                log.exception("scheduler tick failed")
            self.flush()
