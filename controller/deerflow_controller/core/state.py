"""The scheduling core's state machine: jobs, tasks, agents, timers, dispatch and terminal
states, with no policy beyond FIFO order and credit. Fed events and the current time, it answers
with decisions; nothing here does I/O, sleeps or reads a clock.

:class:`deerflow_controller.core.scheduler.Scheduler` is this core plus its policies, each an
object in a module of its own using the core through its
:class:`~deerflow_controller.core.port.CorePort`. The core calls them through the
:class:`CacheHooks`, :class:`SplitHooks`, :class:`PlacementHooks` and :class:`RecoveryHooks`
installed with the ``use_*`` methods, their methods bound once; without them it is a plain FIFO
scheduler with fixed retries.

This module holds the state (jobs, agents, ready queue, timers), the events the shell feeds it
(jobs, agents, results) and its queries; the rest of the state machine is in functions bound
to :class:`SchedulerCore` as methods: admission and dispatch (``core_dispatch``), time
(``core_timeouts``) and terminal states (``core_terminal``). Its plain data is in
``core_types``, the timer heap in ``timers``.

Cost per task is O(log n) in queued tasks: ready tasks sit in per-handler heaps, timers in one
heap with lazy invalidation, and no event scans all tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from deerflow_controller.cache import ResultCache
from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core import dispatch as core_dispatch
from deerflow_controller.core import settings as core_settings
from deerflow_controller.core import terminal as core_terminal
from deerflow_controller.core import timeouts as core_timeouts
from deerflow_controller.core import trust as core_trust
from deerflow_controller.core.credit_index import CreditIndex
from deerflow_controller.core.hooks import (
    CacheHooks,
    FirstFit,
    FixedRetries,
    PlacementHooks,
    RecoveryHooks,
    SplitHooks,
    WholeTasks,
    no_cache,
    no_lookups,
    no_preload,
    no_settle,
)
from deerflow_controller.core.inputs import link_consumers
from deerflow_controller.core.model import (
    AgentView,
    AttemptKey,
    ErrorKind,
    HandlerTraits,
    Job,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.outputs import OutputBytes
from deerflow_controller.core.port import CorePort
from deerflow_controller.core.quotas import Quotas
from deerflow_controller.core.ready_queue import ReadyQueue
from deerflow_controller.core.timers import TimerHeap, TimerKind
from deerflow_controller.core.types import PROGRESS_EVENT_EVERY_S, AttemptResult, Counters, Outbox
from deerflow_controller.ratelimit import RateLimiter
from deerflow_controller.recovery import classify


class SchedulerCore:
    """Jobs, tasks and agents, and the rules that move tasks between states (see the module
    docstring); subclassed by :class:`~deerflow_controller.core.scheduler.Scheduler`."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.limiter = limiter or RateLimiter()
        self._offered: list[Task] = []
        self._rate_timer_at = math.inf
        self._liveness_at = math.inf
        """When the pending liveness check is due (inf: none pending)."""
        self.jobs: dict[str, Job] = {}
        self.agents: dict[str, AgentView] = {}
        self.credit_index = CreditIndex()  # kept by every change of an agent's credit
        self.ready = ReadyQueue(self.config.tenant_weights)
        self.counters = Counters()
        self.quotas = Quotas(self.config)  # unfinished work per tenant (what submit admits)
        self.outputs = OutputBytes()  # SUCCEEDED outputs held (core.outputs)
        self.outbox = Outbox()
        self._timer_heap = TimerHeap()
        self._timers = self._timer_heap.entries
        """The heap's list itself (tick pops from it)."""
        self._push_timer = self._timer_heap.push
        self._handler_offers: dict[str, int] = {}
        self.slot_limit = self.config.slot_limit
        """Most slots the core counts for any agent (0: what each declared); see
        ``core_settings``."""
        self.prefetch_floor = self.config.prefetch
        """The least prefetch per agent now (starts at ``SchedulerConfig.prefetch``)."""
        self._declared_slots: dict[str, int] = {}
        self._membership_changed_at = 0.0
        self._rr = 0
        self.traits: dict[str, HandlerTraits] = {}
        """What agents declared about each handler (the first while offered: ``core.trust``)."""
        self.cache: ResultCache | None = None
        """The result cache (issue #6), the cache policy's (see :meth:`use_cache`); None: every
        task runs."""
        self._from_cache: Callable[[Task, float], bool] = no_cache
        self._cache_unlooked: Callable[[str, int], bool] = no_lookups
        self._cache_settle: Callable[[Task, TaskState, float], None] = no_settle
        self._preload: Callable[[float], None] = no_preload
        self._unrecorded_holder: Callable[[Task], bool] = core_trust.never
        """Whether a task's holders are unknown (restored after a failover, not yet given to
        an agent): then a result of any joined agent counts (``Restorer.holds``)."""
        # The other areas' hooks are bound by their use_* methods; until a policy is given,
        # these stand-ins answer (see core_hooks).
        self.use_split(WholeTasks())
        self.use_placement(FirstFit())
        self.use_recovery(FixedRetries())
        self.port = CorePort(
            config=self.config,
            jobs=self.jobs,
            add_job=self._add_job,
            make_ready=self._make_ready,
            emit=self._emit,
            terminal=self._terminal,
            fail_dependents=self._fail_dependents,
            arm_job_deadline=self._arm_job_deadline,
            dispatch=self._dispatch,
            agents=self.agents,
            credit_index=self.credit_index,
            traits=self.traits,
            counters=self.counters,
            finish=self._finish,
            release_slot_by_cancel=self._release_slot_by_cancel,
            outbox=self._current_outbox,
            limiter=self.limiter,
            push_timer=self._push_timer,
            task_for=self._task_for,
            assign=self._assign,
            take_back=self._take_back,
            submit=self.submit,
        )
        """What policy objects may do to this core (see ``core_port``)."""

    # ----------------------------------------------------------------- policies

    def use_split(self, policy: SplitHooks) -> None:
        """Split ready tasks with ``policy`` (without one, every task runs whole). Its methods
        are bound here once, so the core calls them as it calls its own."""
        self._split = policy.split
        self._splits = policy.splits
        self._part_ended = policy.part_ended
        self._cancel_parts = policy.cancel_parts

    def use_recovery(self, policy: RecoveryHooks) -> None:
        """Decide retries and keep circuit breakers and quarantine with ``policy`` (without
        one, fixed retries, circuits never open and no agent is quarantined). Its methods are
        bound here once."""
        self.breakers = policy.breakers
        """The circuits dispatch checks."""
        self._quarantined = policy.quarantined
        """Agent id -> handlers it may not run now."""
        self._circuit_keys = policy.circuit_keys
        self._record_successes = policy.record_successes
        self._record_failure = policy.record_failure
        self._park = policy.park
        self._advance_recovery = policy.advance
        self._decide_retry = policy.decide_retry

    def use_placement(self, policy: PlacementHooks) -> None:
        """Predict, place tasks, steal unstarted attempts and learn from results with
        ``policy`` (without one, nothing is predicted and the puller runs what it pulls, in
        FIFO order within a priority). Its methods are bound here once."""
        self._place = policy.place
        self._steal = policy.steal
        self._learn = policy.learn
        self._predict = policy.predict
        self._assigned = policy.assigned
        self._declare = policy.declare
        self._placement_agent_left = policy.agent_left
        self._attempt_started = policy.attempt_started
        self._attempt_ended = policy.attempt_ended
        self._lpt_max_advance_s = policy.lpt_max_advance_s

    def use_cache(self, policy: CacheHooks) -> None:
        """Answer tasks from ``policy``'s result cache, dedup identical ones in flight and
        preload (without one, every task runs). Its methods are bound here once."""
        self.cache = policy.cache
        self._from_cache = policy.from_cache
        self._cache_unlooked = policy.unlooked
        self._cache_settle = policy.settle
        self._preload = policy.preload

    def _current_outbox(self) -> Outbox:
        return self.outbox

    # ----------------------------------------------------------------- queries

    def take(self) -> Outbox:
        """Hand the accumulated decisions to the shell and start a new outbox."""
        out, self.outbox = self.outbox, Outbox()
        return out

    def next_timer(self) -> float | None:
        """Earliest time at which :meth:`tick` has something to do, or None."""
        return self._timer_heap.next_at()

    def known_handlers(self) -> list[str]:
        return sorted(h for h, n in self._handler_offers.items() if n > 0)

    def queued(self) -> int:
        return len(self.ready)

    def prefetch_for(self, slots: int) -> int:
        """Attempts an agent with ``slots`` may hold beyond them at least (see SchedulerConfig)."""
        return max(self.prefetch_floor, int(max(1, slots) * self.config.prefetch_fraction))

    # ----------------------------------------------------------------- jobs

    def submit(
        self,
        job_id: str,
        name: str,
        specs: Sequence[TaskSpec],
        now: float,
        *,
        deadline_s: float = 0.0,
    ) -> Job:
        """Accept a validated job (see ``validation.validate_job``); release its ready tasks.
        ``deadline_s`` (seconds from ``now``; 0: none) ends its unfinished tasks TIMED_OUT."""
        job = self._add_job(job_id, name, specs, now)
        self._arm_job_deadline(job, now, deadline_s)
        tasks = job.tasks
        # PENDING events first: releasing a root may fail its dependents at once (unknown
        # handler), and a task's terminal event must be its last.
        for task in tasks.values():
            if task.waiting_on:
                self._emit(task, TaskState.PENDING, now)
        # The roots are fixed before any is released: a root the cache answers at once
        # releases its dependents itself, and they must not be taken for roots after it.
        self._release_roots([t for t in tasks.values() if not t.waiting_on], now)
        self._dispatch(now)
        return job

    def _add_job(
        self, job_id: str, name: str, specs: Sequence[TaskSpec], submitted_at: float
    ) -> Job:
        """Build a job's tasks (the config's defaults filling what a spec leaves unset), link
        each task to the tasks it depends on, register the job and count its tasks submitted.
        The tasks stay PENDING; nothing is emitted or released. Used by submit and restore."""
        cfg = self.config
        job = Job(id=job_id, name=name, submitted_at=submitted_at)
        tasks = job.tasks
        for spec in specs:
            tasks[spec.id] = Task(
                job=job,
                spec=spec,
                timeout_s=spec.timeout_s or cfg.default_timeout_s,
                max_retries=cfg.default_max_retries if spec.max_retries < 0 else spec.max_retries,
            )
        job.remaining = len(tasks)
        self.jobs[job_id] = job
        self.counters.submitted += len(tasks)
        self.quotas.job_added(job)
        for task in tasks.values():
            deps = task.spec.depends_on
            if deps:
                task.waiting_on = len(deps)
                for dep in deps:
                    tasks[dep].add_dependent(task)
        link_consumers(job)
        return job

    def cancel(self, job_id: str, task_ids: Iterable[str] | None, reason: str, now: float) -> int:
        """Cancel tasks (all of the job's when ``task_ids`` is None). Returns how many were live.

        Raises KeyError for an unknown job or task id, before cancelling anything.
        """
        job = self.jobs[job_id]
        targets = list(job.tasks.values()) if task_ids is None else [job.tasks[t] for t in task_ids]
        message = f"cancelled by client: {reason}" if reason else "cancelled by client"
        error = TaskError(ErrorKind.CANCELLED_BY_CLIENT, message)
        cancelled = []
        for task in targets:
            if task.terminal:
                continue
            self._release_slot_by_cancel(task)
            self._terminal(task, TaskState.CANCELLED, now, error, None, None)
            cancelled.append(task)
        # Only now fail dependents outside the cancelled set, so cancelling a whole job leaves
        # every task CANCELLED whatever order the tasks were submitted in.
        for task in cancelled:
            self._fail_dependents(task, now)
        self._dispatch(now)
        return len(cancelled)

    # ----------------------------------------------------------------- agents

    def agent_joined(
        self,
        agent_id: str,
        handlers: Iterable[str],
        slots: int,
        now: float,
        *,
        labels: dict[str, str] | None = None,
        running: Iterable[AttemptKey] = (),
        handler_slots: Mapping[str, int] | None = None,
        traits: Mapping[str, HandlerTraits] | None = None,
    ) -> AgentView:
        """Register a connected agent. Attempts it reports as still running are kept on it when
        they are the task's current attempt (a reconnect), and cancelled there otherwise."""
        if agent_id in self.agents:
            raise ValueError(f"agent {agent_id!r} is already connected")
        counted = self._limited_slots(agent_id, slots)
        agent = AgentView(
            id=agent_id,
            handlers=frozenset(handlers),
            slots=counted,
            prefetch=self.prefetch_for(counted),
            labels=dict(labels or {}),
            # A cap at or above the agent's slots caps nothing; 0 means the agent's total.
            handler_caps={h: n for h, n in (handler_slots or {}).items() if 0 < n < max(1, slots)},
            connected_at=now,
            last_heartbeat=now,
            rate_window_start=now,
        )
        self.agents[agent_id] = agent
        fresh = self._fresh_traits(traits) if traits else None
        if fresh:
            self.traits.update(fresh)
            self._declare(fresh)
        self._schedule_liveness(now + self.config.agent_silence_s)
        for h in agent.handlers:
            self._handler_offers[h] = self._handler_offers.get(h, 0) + 1
        self._membership_changed(now)
        for key in running:
            task = self._task_for(key)
            reclaim = task is not None and core_trust.may_reclaim(task, key[2], agent_id)
            if task is not None and reclaim and not task.terminal:
                # The task was requeued when the agent vanished; take the running attempt back
                # from wherever it waits again (queued, or throttled by its keys or a circuit).
                self._leave_wait(task)
                # Had it given its rate slots back (its attempt counted as failed), it holds
                # them again while it runs.
                self.limiter.hold_again(task, now)
                task.state = TaskState.RUNNING
                task.agent_id = agent_id
                task.give(agent_id)
                agent.hold(key, task)
                self._emit(task, TaskState.RUNNING, now)
                # The attempt keeps the deadline it had before the reconnect.
                self._push_timer(task.deadline, TimerKind.DEADLINE, task, task.attempt)
            else:
                self.outbox.cancels.setdefault(agent_id, []).append(key)
        self.credit_index.joined(agent)
        self._dispatch(now)
        return agent

    def agent_left(self, agent_id: str, now: float, *, reconnecting: bool = False) -> None:
        """The agent's stream ended: its unfinished attempts are lost and run elsewhere, each
        loss counting as a failed attempt.

        ``reconnecting=True`` when the same agent is rejoining at once (a new stream replacing
        one we had not yet seen die): its attempts wait in the queue, uncounted and undispatched,
        so that its Hello can reclaim those it still runs."""
        agent = self.agents.pop(agent_id, None)
        if agent is None:
            return
        self.credit_index.remove(agent)
        self._declared_slots.pop(agent_id, None)
        self._placement_agent_left(agent_id)
        for h in agent.handlers:
            self._handler_offers[h] -= 1
        self._membership_changed(now)
        for key, task in agent.in_flight.items():
            if task.terminal or task.agent_id != agent_id or task.attempt != key[2]:
                continue
            if reconnecting:
                task.agent_id = ""
                self._push_ready(task, now)
                continue
            error = TaskError(
                ErrorKind.AGENT_LOST,
                f"agent {agent_id!r} disconnected during attempt {task.attempt}",
                retryable=True,
            )
            self._attempt_failed(task, error, now)
        agent.release_all()
        if not reconnecting:
            self._dispatch(now)

    def agent_draining(self, agent_id: str, not_started: Iterable[AttemptKey], now: float) -> None:
        """The agent takes no new work; attempts it never started go back to the queue, in their
        old place, without counting as a try and keeping their rate admission (their requests
        were never sent, so their keys are not charged again)."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return
        agent.draining = True
        self.credit_index.update(agent)
        for key in not_started:
            self._attempt_ended(agent_id, key, now)
            task = agent.release(key)
            if task is None or task.terminal or task.attempt != key[2]:
                continue
            task.agent_id = ""
            self._make_ready(task, now)
        self._dispatch(now)

    def _held(
        self, agent_id: str, keys: Iterable[AttemptKey], state: TaskState, now: float
    ) -> Iterator[tuple[AttemptKey, Task]]:
        """The tasks whose current attempt ``agent_id`` holds, among ``keys``, that are in
        ``state`` (a stale or unknown key is skipped); the agent showed life at ``now``."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.last_heartbeat = now
        for key in keys:
            task = self._task_for(key)
            if (
                task is not None
                and task.state == state
                and task.attempt == key[2]
                and task.agent_id == agent_id
            ):
                yield key, task

    def started(self, agent_id: str, keys: Iterable[AttemptKey], now: float) -> None:
        for key, task in self._held(agent_id, keys, TaskState.DISPATCHED, now):
            task.state = TaskState.RUNNING
            self._attempt_started(agent_id, key, now)
            # Start-to-close runs from the start: a prefetched attempt may have waited.
            task.deadline = now + task.timeout_s + self.config.timeout_grace_s
            self._emit(task, TaskState.RUNNING, now)
            self._push_timer(task.deadline, TimerKind.DEADLINE, task, task.attempt)
            hb = task.spec.heartbeat_timeout_s
            if hb > 0:
                task.progress_at = now
                self._push_timer(now + hb, TimerKind.HEARTBEAT, task, task.attempt)

    def progress(
        self,
        agent_id: str,
        keys: Iterable[AttemptKey],
        now: float,
        *,
        reports: Mapping[AttemptKey, tuple[float, str]] | None = None,
    ) -> None:
        """Long attempts showed life (TaskContext.progress): their heartbeat timeouts restart.
        With ``reports`` (what each said: fraction 0-1 or -1, message), a task's watchers get a
        PROGRESS event with it, at most one every ``PROGRESS_EVENT_EVERY_S`` per task (a report
        in between only restarts the timeout)."""
        for key, task in self._held(agent_id, keys, TaskState.RUNNING, now):
            task.progress_at = now
            if reports is None or now - task.progress_event_at < PROGRESS_EVENT_EVERY_S:
                continue
            said = reports.get(key)
            if said is None:
                continue
            task.progress_event_at = now
            fraction, message = said
            self._emit(task, TaskState.PROGRESS, now, detail=message, progress=fraction)

    def finished(self, agent_id: str, results: Sequence[AttemptResult], now: float) -> None:
        """Apply a batch of attempt results from one agent, then refill its credit. A result
        counts only from the agent given that attempt (``Task.holders``; an earlier attempt's
        late success still wins its race)."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.last_heartbeat = now
            self._observe_completions(agent, len(results), now)
        ended = self._attempt_ended
        succeeded: list[Task] = []  # to the breakers and quarantine together (before failures)
        for result in results:
            key = result.key
            task = self.credit_index.release(agent, key) if agent is not None else None
            if task is None:
                task = self._task_for(key)
                if (
                    task is not None
                    and task.held_by(key[2]) != agent_id
                    and not self._unrecorded_holder(task)
                ):
                    # Never this agent's attempt (a forged key): nothing it says counts.
                    self.counters.foreign_results += 1
                    continue
            ended(agent_id, key, now)
            if agent is not None:
                agent.completed += 1
            if task is None or task.terminal:
                self.counters.stale_results += 1
                continue
            if result.metadata and task.spec.rate_keys:
                self.limiter.observe(task, result.metadata, now)
            current = task.attempt == key[2] and task.agent_id == agent_id
            if result.ok:
                task.run_s = result.run_s
                succeeded.append(task)
                if result.run_s > 0:
                    self._learn(task, agent_id, result, now)
                if not current and task.agent_id:
                    # An earlier attempt won the race: stop the current one.
                    self.outbox.cancels.setdefault(task.agent_id, []).append(task.key)
                task.output, task.output_sha256 = result.output, result.output_sha256
                self._finish(task, TaskState.SUCCEEDED, now, attempt=key[2], agent=agent_id)
            elif current:
                if result.cancelled:
                    # We did not ask: the agent stopped it (shutting down). Run it elsewhere.
                    err = TaskError(
                        ErrorKind.AGENT_LOST,
                        f"agent {agent_id!r} stopped attempt {key[2]} before it finished",
                        retryable=True,
                    )
                    self._attempt_failed(task, err, now)
                    continue
                err = result.error or TaskError(ErrorKind.HANDLER_ERROR, "handler failed", True)
                cls = classify(err, result.metadata)
                if succeeded:
                    self._record_successes(succeeded, agent_id, now)
                    succeeded = []
                self._record_failure(task, agent_id, err, cls, now)
                self._attempt_failed(task, err, now, cls=cls, metadata=result.metadata)
            else:
                self.counters.stale_results += 1
        if succeeded:
            self._record_successes(succeeded, agent_id, now)
        self._dispatch(now)

    # ----------------------------------------------------------------- time

    # Functions of core_timeouts.py, bound here as methods (tick fires the timers).
    tick = core_timeouts.tick
    _check_liveness = core_timeouts.check_liveness
    _schedule_liveness = core_timeouts.schedule_liveness
    _deadline_due = core_timeouts.deadline_due
    _schedule_to_start_due = core_timeouts.schedule_to_start_due
    _schedule_to_close_due = core_timeouts.schedule_to_close_due
    _arm_job_deadline = core_timeouts.arm_job_deadline
    _job_deadline_due = core_timeouts.job_deadline_due
    _heartbeat_due = core_timeouts.heartbeat_due

    # ----------------------------------------------------------------- internals

    def _task_for(self, key: AttemptKey) -> Task | None:
        job = self.jobs.get(key[0])
        if job is None:
            return None
        task = job.tasks.get(key[1])
        if task is None and job.parts:
            task = job.parts.get(key[1])
        return task

    # ----------------------------------------------------------------- admission and dispatch
    # Functions of core_dispatch.py, bound here as methods.
    _observe_completions = core_dispatch.observe_completions
    _membership_changed = core_dispatch.membership_changed
    _handler_unknown = core_dispatch.handler_unknown
    _unknown_handler_error = core_dispatch.unknown_handler_error
    _fail_orphans = core_dispatch.fail_orphans
    _labels_unmatched = core_dispatch.labels_unmatched
    _unmatched_labels_error = core_dispatch.unmatched_labels_error
    _may_become_ready = core_dispatch.may_become_ready
    _leave_wait = core_dispatch.leave_wait
    _make_ready = core_dispatch.make_ready
    _release_roots = core_dispatch.release_roots
    _release_throttled = core_dispatch.release_throttled
    _dispatch = core_dispatch.dispatch
    _fill = core_dispatch.fill
    _assign = core_dispatch.assign
    _take_back = core_dispatch.take_back
    _push_ready = core_dispatch.push_ready

    # Functions of core_trust.py: one definition of a handler's traits for the cluster.
    heartbeat = core_trust.heartbeat
    trait_conflict = core_trust.trait_conflict
    _fresh_traits = core_trust.fresh_traits

    # ----------------------------------------------------------------- run-time settings
    # Functions of core_settings.py, bound here as methods (the tuner's knobs).
    _limited_slots = core_settings.limited_slots
    set_slot_limit = core_settings.set_slot_limit
    set_prefetch = core_settings.set_prefetch
    set_rate_key_ceiling = core_settings.set_rate_key_ceiling
    declared_slots = core_settings.declared_slots

    # ----------------------------------------------------------------- terminal states
    # Functions of core_terminal.py, bound here as methods.
    _forget_in_flight = core_terminal.forget_in_flight
    _release_slot_by_cancel = core_terminal.release_slot_by_cancel
    _attempt_failed = core_terminal.attempt_failed
    _finish = core_terminal.finish
    _fail_dependents = core_terminal.fail_dependents
    _terminal = core_terminal.terminal
    _emit = core_terminal.emit
