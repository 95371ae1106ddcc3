"""The I/O shell around the pure core: feeds it events with the current time and carries out its
decisions (assignment and cancel messages to agents' streams, wake-ups of job watchers).

All of it runs on one event loop. The shell is the only way to feed the core: the services call
one :class:`Shell` method per event (``submit_job``, ``agent_joined``, ``results``, ...), which
applies it to the scheduler (synchronous and short) and schedules the flush of its decisions
once per loop turn (``call_soon``), so everything that arrived in one turn, from any stream,
leaves in one message per agent. Services read the scheduler's state (``Shell.scheduler``,
``Shell.job``) but never change it (``tests/test_only_the_shell_feeds_the_core.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from deerflow_controller.cache import ResultCache
from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.model import AttemptKey, HandlerTraits, Job, Task, TaskSpec
from deerflow_controller.core.scheduler import AttemptResult, Outbox, RestoredJob, Scheduler
from deerflow_controller.core.validation import quote
from deerflow_controller.ratelimit import RateLimiter
from deerflow_controller.service import wire
from deerflow_controller.service.cache_saver import CacheSaver
from deerflow_controller.service.inputs import InputPacker
from deerflow_controller.service.shown import ShownJob, WithheldTotals
from deerflow_controller.service.splitters import local_split_functions
from deerflow_controller.tuning.knobs import AGENT_SLOTS, PREFETCH, RATE_KEY_CONCURRENCY
from deerflow_protos import agent_pb2

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
    """The controller's side of one agent's stream: an outbound mailbox drained by one writer,
    and the scheduler its events feed (see :meth:`Shell.open_session`)."""

    agent_id: str
    scheduler: Scheduler
    """The scheduler current when the stream opened. After a term's end (HA) it is a discarded
    one, so what the stream still says before it notices its end changes nothing."""
    opened_at: float
    """When the stream's Hello was read (the shell's clock): the agent joins as of then."""
    outbound: collections.deque[agent_pb2.ControllerMessage] = field(
        default_factory=collections.deque
    )
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    instance: str = ""
    """The agent process's secret from its Hello (``Hello.instance``; "" when it sent none):
    the same process may replace this stream, and FetchInput is served, only with it."""
    refusal: str = ""
    """Why the controller ends this stream with INVALID_ARGUMENT (a number out of range);
    "" while it is in order."""
    closed: bool = False
    joined: bool = False
    """Whether its Hello reached the scheduler; a stream that ended before (its Welcome could
    not be written) only leaves the session table."""

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
        self._background: set[asyncio.Task[None]] = set()
        self.interceptors: list[ShellInterceptor] = []
        self.delivery_limit: Callable[[Job], int] | None = None
        """HA mode: how many of a job's events may be delivered (the journal's fence)."""
        self.fenced_jobs: Callable[[], Iterable[str]] | None = None
        """HA mode: the jobs whose results are not all journaled yet (behind the fence)."""
        self.inputs = InputPacker(config.inline_input_bytes, config.max_message_bytes // 8)
        """Puts the dependencies' outputs tasks asked for in their assignments (issue #15)."""

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

    def _changed(self) -> None:
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
                session.send(wire.assignment_batch(epoch, tasks, traceparents, self.inputs))
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

    # ------------------------------------------------------------------ feeding the core
    # One method per event. Each applies it at the shell's clock and schedules the flush of
    # this loop turn; an exception from the scheduler (a bad id) leaves before the flush is
    # scheduled, as nothing was decided.

    def submit_job(
        self, job_id: str, name: str, specs: Sequence[TaskSpec], *, deadline_s: float = 0.0
    ) -> tuple[float, bool]:
        """Accept a validated job (see ``Scheduler.submit``); ``deadline_s`` in seconds from
        now, 0 for none. Returns when it was accepted (wall-clock seconds), which the journal
        (HA) keeps so that a new leader keeps the job's deadline, and whether its decisions
        were flushed already (see below)."""
        now = self.clock()
        quiet = not self._flush_pending
        self.scheduler.submit(job_id, name, specs, now, deadline_s=deadline_s)
        if quiet:
            # Nothing else was decided this loop turn (an idle controller): the job's
            # assignments are handed to the agents' writers now, so that the caller can let
            # them write before gRPC writes the submit's reply. A turn that already has a
            # flush pending keeps batching into it.
            self.flush()
        else:
            self._changed()
        return now, quiet

    def cancel(self, job_id: str, task_ids: Iterable[str] | None, reason: str) -> int:
        """Cancel the job's tasks ``task_ids`` (all of them when None); returns how many were
        live. Raises KeyError for an unknown job or task id, before cancelling anything."""
        n = self.scheduler.cancel(job_id, task_ids, reason, self.clock())
        self._changed()
        return n

    def restore_job(self, record: RestoredJob, now: float) -> Job:
        """Rebuild a journaled job on taking over (see ``Scheduler.restore_job``). ``now`` is
        the takeover's instant, the one its caller judged the journal's expiries against."""
        job = self.scheduler.restore_job(record, now)
        self._changed()
        return job

    def release_restored(self) -> int:
        """End the reconnect grace after a takeover: restored tasks no agent reclaimed become
        ready. Returns how many."""
        released = self.scheduler.release_restored(self.clock())
        self._changed()
        return released

    def drain_agent(self, agent_id: str, reason: str) -> bool:
        """An operator drains a connected agent: it takes no new work, and it is told so (with
        ``reason``) to give back what it has not started. False, changing nothing, when no
        agent of that id is connected."""
        session = self.sessions.get(agent_id)
        if session is None:
            return False
        self.scheduler.agent_draining(agent_id, (), self.clock())
        session.send(agent_pb2.ControllerMessage(drain=agent_pb2.Drain(reason=reason)))
        self._changed()
        return True

    def disconnect_agent(self, agent_id: str) -> bool:
        """Close a connected agent's stream from this side (its etcd lease ended, HA): its
        unfinished attempts are lost and run elsewhere. False, changing nothing, when no agent
        of that id is connected."""
        session = self.sessions.pop(agent_id, None)
        if session is None:
            return False
        session.close()
        self.scheduler.agent_left(agent_id, self.clock())
        self._changed()
        task = asyncio.get_running_loop().create_task(self._membership_changed())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    def tune(self, knob: str, value: int) -> None:
        """Set one of the tuner's knobs (``deerflow_controller.tuning.knobs``) to ``value``
        now. Raises ValueError for an unknown knob or a negative value, changing nothing."""
        sched = self.scheduler
        setters = {
            AGENT_SLOTS: sched.set_slot_limit,
            PREFETCH: sched.set_prefetch,
            RATE_KEY_CONCURRENCY: sched.set_rate_key_ceiling,
        }
        setter = setters.get(knob)
        if setter is None:
            raise ValueError(f"no knob {quote(knob)}; knobs are {', '.join(sorted(setters))}")
        setter(value, self.clock())
        self._changed()

    # ------------------------------------------------------------------ agent streams
    # What an agent says on its stream feeds the scheduler its session was opened with.

    def takeover_refusal(self, agent_id: str, instance: str) -> str | None:
        """Why a Hello under ``agent_id`` with ``instance`` may not replace the agent's connected
        stream (None: no stream is connected, or it may): it may when it is the same agent
        process (the same instance) or when the connected stream has shown no life for the
        agent silence timeout (a restarted process whose old stream is half-dead)."""
        old = self.sessions.get(agent_id)
        if old is None or (instance and hmac.compare_digest(old.instance, instance)):
            return None
        agent = old.scheduler.agents.get(agent_id)
        last = agent.last_heartbeat if agent is not None else old.opened_at
        silence = self.config.scheduler.agent_silence_s
        quiet = self.clock() - last
        if quiet >= silence:
            return None
        return (
            f"agent {quote(agent_id)} is connected on another stream, which spoke "
            f"{max(0.0, quiet):.3g} s ago, and this Hello's instance is not that stream's: give "
            f"each agent a unique id (--id), or wait {silence:g} s of its silence"
        )

    def may_fetch(self, agent_id: str, instance: str) -> bool:
        """Whether ``agent_id`` is connected with the Hello ``instance`` (FetchInput's caller)."""
        session = self.sessions.get(agent_id)
        return (
            session is not None
            and bool(session.instance)
            and hmac.compare_digest(session.instance, instance)
        )

    def trait_conflict(self, traits: Mapping[str, HandlerTraits]) -> str | None:
        """Why a joining agent's handler traits may not be accepted (``core.trust``), or None."""
        return self.scheduler.trait_conflict(traits)

    def open_session(self, agent_id: str, instance: str = "") -> AgentSession:
        """A new stream of ``agent_id``, its Hello read now (see :meth:`takeover_refusal` for
        whether it may be). A stream the agent still had is closed and replaced: its attempts
        wait in the queue, uncounted, for this stream's Hello (:meth:`agent_joined`) to
        reclaim those it still runs."""
        now = self.clock()
        old = self.sessions.pop(agent_id, None)
        if old is not None:
            # The same agent reconnected before we noticed its old stream die.
            log.info("agent %s reconnected; replacing its previous stream", agent_id)
            old.close()
            self.scheduler.agent_left(agent_id, now, reconnecting=True)
            self._changed()
        session = AgentSession(agent_id, self.scheduler, now, instance=instance)
        self.sessions[agent_id] = session
        return session

    async def agent_joined(
        self,
        session: AgentSession,
        handlers: Iterable[str],
        slots: int,
        *,
        labels: dict[str, str],
        running: Sequence[AttemptKey],
        handler_slots: Mapping[str, int],
        traits: Mapping[str, HandlerTraits],
    ) -> None:
        """The session's Hello is applied (as of :attr:`AgentSession.opened_at`): after a
        failover its ``running`` attempts first claim the restored tasks (issue #3). Then
        whoever waits for agents is told. Raises ValueError when the agent is connected
        already (see ``Scheduler.agent_joined``)."""
        sched, agent_id, now = session.scheduler, session.agent_id, session.opened_at
        sched.adopt_restored(running, now)
        sched.agent_joined(
            agent_id,
            handlers,
            slots,
            now,
            labels=labels,
            running=running,
            handler_slots=handler_slots,
            traits=traits,
        )
        session.joined = True
        self._changed()
        await self._membership_changed()

    def results(self, session: AgentSession, results: Sequence[AttemptResult]) -> None:
        """A batch of the agent's attempt results."""
        session.scheduler.finished(session.agent_id, results, self.clock())
        self._changed()

    def started(self, session: AgentSession, keys: Iterable[AttemptKey]) -> None:
        """The agent started these attempts."""
        session.scheduler.started(session.agent_id, keys, self.clock())
        self._changed()

    def heartbeat(
        self,
        session: AgentSession,
        running: int,
        cpu_percent: float,
        memory_percent: float,
        *,
        process_cpu_percent: float,
    ) -> None:
        """The agent's load, each figure 0-100 (see ``Scheduler.heartbeat``)."""
        session.scheduler.heartbeat(
            session.agent_id,
            running,
            cpu_percent,
            memory_percent,
            self.clock(),
            process_cpu_percent=process_cpu_percent,
        )
        self._changed()

    def progress(
        self, session: AgentSession, reports: Mapping[AttemptKey, tuple[float, str]]
    ) -> None:
        """Long attempts of the agent showed life (their heartbeat timeouts restart) and said how
        far they got (fraction 0-1 or -1, message), which their watchers see."""
        session.scheduler.progress(session.agent_id, reports, self.clock(), reports=reports)
        self._changed()

    def agent_draining(self, session: AgentSession, not_started: Iterable[AttemptKey]) -> None:
        """The agent takes no new work and gives back the attempts it never started."""
        session.scheduler.agent_draining(session.agent_id, not_started, self.clock())
        self._changed()

    async def close_session(self, session: AgentSession) -> bool:
        """The stream ended. If it was still its agent's current one (not replaced, not closed
        from this side), the agent leaves: its unfinished attempts run elsewhere, and whoever
        waits for agents is told. Returns whether it left."""
        session.close()
        agent_id = session.agent_id
        if self.sessions.get(agent_id) is not session:
            return False
        del self.sessions[agent_id]
        if not session.joined:
            return False
        session.scheduler.agent_left(agent_id, self.clock())
        self._changed()
        await self._membership_changed()
        return True

    # ------------------------------------------------------------------ queries

    def job(self, job_id: str) -> Job | None:
        """The job ``job_id``, or None: never submitted here, or forgotten after its
        retention."""
        return self.scheduler.jobs.get(job_id)

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

    def wake_watchers(self, job_id: str) -> None:
        """Wake the job's watchers (HA: its results were journaled, so they may go out)."""
        self._wake_watchers(job_id)

    def deliverable(self, job: Job) -> int:
        """How many of the job's events its watchers may be given now: all of them, or in HA
        mode those before its first result not yet journaled (``delivery_limit``)."""
        limit = self.delivery_limit
        n = len(job.events)
        return n if limit is None else min(n, limit(job))

    def shown(self, job: Job) -> ShownJob:
        """The job as a client may be shown it now (GetJob, GetTask, the jobs view): its tasks
        as of its deliverable events, so that no read tells a result WatchJob would not."""
        return ShownJob(job, self.deliverable(job))

    def withheld_totals(self) -> WithheldTotals:
        """What the core holds finished but a client is not yet told so (HA: results not
        journaled yet): what GetStats' totals leave out. One pass over the fenced jobs."""
        out = WithheldTotals()
        fenced = self.fenced_jobs
        if fenced is None:
            return out
        jobs = self.scheduler.jobs
        for job_id in list(fenced()):
            job = jobs.get(job_id)
            if job is not None:
                out.add(self.shown(job))
        return out

    # ------------------------------------------------------------------ membership

    async def _membership_changed(self) -> None:
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
