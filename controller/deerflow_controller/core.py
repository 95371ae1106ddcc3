"""The scheduling core's state machine: jobs, tasks, agents, timers, dispatch and terminal
states, with no policy beyond FIFO order and credit. Fed events and the current time, it answers
with decisions; nothing here does I/O, sleeps or reads a clock.

:class:`deerflow_controller.scheduler.Scheduler` is this core plus its policies, each an
object in a module of its own using the core through its
:class:`~deerflow_controller.core_port.CorePort`. The core calls them through the
:class:`CacheHooks`, :class:`SplitHooks`, :class:`PlacementHooks` and :class:`RecoveryHooks`
installed with the ``use_*`` methods, their methods bound once; without them it is a plain FIFO
scheduler with fixed retries.

Cost per task is O(log n) in queued tasks: ready tasks sit in per-handler heaps, timers in one
heap with lazy invalidation, and no event scans all tasks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence

from . import core_terminal, core_timeouts
from .balancer import Balancer
from .cache import ResultCache
from .config import SchedulerConfig
from .core_hooks import (
    CacheHooks,
    PlacementHooks,
    RecoveryHooks,
    SplitHooks,
    first_agent,
    no_advance,
    no_cache,
    no_cancel_parts,
    no_circuit_keys,
    no_learn,
    no_park,
    no_part_ended,
    no_preload,
    no_record_failure,
    no_record_success,
    no_settle,
    no_split,
    no_steal,
)
from .core_port import CorePort
from .core_types import (
    AttemptResult,
    Counters,
    Outbox,
    SplitRun,
)
from .model import (
    AgentView,
    AttemptKey,
    ErrorClass,
    ErrorKind,
    HandlerTraits,
    Job,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)
from .predictor import HandlerDefaults, Predictor, features
from .ratelimit import RateLimiter
from .ready_queue import ReadyQueue, labels_match
from .recovery import (
    CircuitBreakers,
    RetryPolicy,
    classify,
)
from .timers import TimerHeap, TimerKind


def _percent(value: float) -> float:
    """A load figure an agent reported, made a finite 0-100 (NaN reads 0)."""
    return min(100.0, max(0.0, value)) if math.isfinite(value) else (100.0 if value > 0 else 0.0)


_RATE_WINDOW_S = 0.05
"""An agent's completion rate is measured over windows at least this long."""
_RATE_ALPHA = 0.3
"""Weight of the newest window when an agent's completion rate falls (a rise counts at once)."""


class SchedulerCore:
    """Jobs, tasks and agents, and the rules that move tasks between states (see the module
    docstring); subclassed by :class:`~deerflow_controller.scheduler.Scheduler`."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        limiter: RateLimiter | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.limiter = limiter or RateLimiter()
        self._offered: list[Task] = []
        self._rate_timer_at = math.inf
        self._liveness_at = math.inf
        """When the pending liveness check is due (inf: none pending)."""
        self.jobs: dict[str, Job] = {}
        self.agents: dict[str, AgentView] = {}
        self.ready = ReadyQueue(self.config.tenant_weights)
        self.counters = Counters()
        self.outbox = Outbox()
        self._rng = random.Random(seed)
        self._timer_heap = TimerHeap()
        self._timers = self._timer_heap.entries
        """The heap's list itself (tick pops from it)."""
        self._push_timer = self._timer_heap.push
        self._handler_offers: dict[str, int] = {}
        self._membership_changed_at = 0.0
        self._rr = 0
        self.traits: dict[str, HandlerTraits] = {}
        """What agents declared about each handler (the latest declaration wins)."""
        recovery = self.config.recovery
        self.retry_policy = RetryPolicy(recovery.retry)
        self.breakers = CircuitBreakers(recovery.breaker)
        """The circuits dispatch checks: the recovery policy's (see :meth:`use_recovery`);
        without one, circuits nothing records into, so always closed."""
        self._quarantined: dict[str, frozenset[str]] = {}
        """Agent id -> handlers it may not run now: the recovery policy's (none without one)."""
        self._circuit_keys: Callable[[Task], tuple[str, ...]] = no_circuit_keys
        self._record_success: Callable[[Task, str, float], None] = no_record_success
        self._record_failure: Callable[[Task, str, TaskError, ErrorClass, float], None] = (
            no_record_failure
        )
        self._park: Callable[[Task, str, float], None] = no_park
        self._advance_recovery: Callable[[float], None] = no_advance
        self.predictor = Predictor(self.config.predictor)
        self._split: Callable[[Task, float], bool] = no_split
        """Split a ready task into parts (True when it was split or failed to split); see
        :meth:`use_split`."""
        self._part_ended: Callable[[Task, float], None] = no_part_ended
        self._cancel_parts: Callable[[SplitRun, Iterable[int], float], None] = no_cancel_parts
        self.cache: ResultCache | None = None
        """The result cache (issue #6), the cache policy's (see :meth:`use_cache`); None: every
        task runs."""
        self._from_cache: Callable[[Task, float], bool] = no_cache
        self._cache_settle: Callable[[Task, TaskState, float], None] = no_settle
        self._preload: Callable[[float], None] = no_preload
        self.balancer = Balancer(self.config.balancer)
        self._place: Callable[[Task, Sequence[AgentView], float], AgentView | None] = first_agent
        """The agent to run a task among candidates (the puller first); see
        :meth:`use_placement`."""
        self._steal: Callable[[float], None] = no_steal
        self._learn: Callable[[Task, str, AttemptResult, float], None] = no_learn
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
            traits=self.traits,
            counters=self.counters,
            finish=self._finish,
            release_slot_by_cancel=self._release_slot_by_cancel,
            outbox=self._current_outbox,
            limiter=self.limiter,
            push_timer=self._push_timer,
            task_for=self._task_for,
            assign=self._assign,
            submit=self.submit,
        )
        """What policy objects may do to this core (see ``core_port``)."""

    # ----------------------------------------------------------------- policies

    def use_split(self, policy: SplitHooks) -> None:
        """Split ready tasks with ``policy`` (without one, every task runs whole). Its methods
        are bound here once, so the core calls them as it calls its own."""
        self._split = policy.split
        self._part_ended = policy.part_ended
        self._cancel_parts = policy.cancel_parts

    def use_recovery(self, policy: RecoveryHooks) -> None:
        """Keep circuit breakers and quarantine with ``policy`` (without one, circuits never
        open and no agent is quarantined). Its methods are bound here once."""
        self.breakers = policy.breakers
        self._quarantined = policy.quarantined
        self._circuit_keys = policy.circuit_keys
        self._record_success = policy.record_success
        self._record_failure = policy.record_failure
        self._park = policy.park
        self._advance_recovery = policy.advance

    def use_placement(self, policy: PlacementHooks) -> None:
        """Place tasks, steal unstarted attempts and learn from results with ``policy``
        (without one, the puller runs what it pulls). Its methods are bound here once."""
        self._place = policy.place
        self._steal = policy.steal
        self._learn = policy.learn

    def use_cache(self, policy: CacheHooks) -> None:
        """Answer tasks from ``policy``'s result cache, dedup identical ones in flight and
        preload (without one, every task runs). Its methods are bound here once."""
        self.cache = policy.cache
        self._from_cache = policy.from_cache
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
        cfg = self.config
        return max(cfg.prefetch, int(max(1, slots) * cfg.prefetch_fraction))

    def _observe_completions(self, agent: AgentView, n: int, now: float) -> None:
        """Count ``n`` finished attempts; at the end of each rate window, update the agent's
        completion rate and size its prefetch to cover ``prefetch_cover_s`` of it (between the
        floor of :meth:`prefetch_for` and its slots)."""
        cover = self.config.prefetch_cover_s
        if cover <= 0:
            return
        agent.rate_window_count += n
        span = now - agent.rate_window_start
        if span < _RATE_WINDOW_S:
            return
        rate = agent.rate_window_count / span
        agent.rate_window_start, agent.rate_window_count = now, 0
        old = agent.completion_rate
        # Up at once (a burst starts), down slowly (one slow window is no trend).
        agent.completion_rate = rate if rate >= old else old + _RATE_ALPHA * (rate - old)
        wanted = int(agent.completion_rate * cover)
        agent.prefetch = min(max(self.prefetch_for(agent.slots), wanted), max(1, agent.slots))

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
        for task in [t for t in tasks.values() if not t.waiting_on]:
            self._make_ready(task, now)
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
        for task in tasks.values():
            deps = task.spec.depends_on
            if deps:
                task.waiting_on = len(deps)
                for dep in deps:
                    tasks[dep].dependents.append(task)
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
        agent = AgentView(
            id=agent_id,
            handlers=frozenset(handlers),
            slots=max(1, slots),
            prefetch=self.prefetch_for(slots),
            labels=dict(labels or {}),
            # A cap at or above the agent's slots caps nothing; 0 means the agent's total.
            handler_caps={h: n for h, n in (handler_slots or {}).items() if 0 < n < max(1, slots)},
            connected_at=now,
            last_heartbeat=now,
            rate_window_start=now,
        )
        self.agents[agent_id] = agent
        if traits:
            self.traits.update(traits)
            for name, t in traits.items():
                self.predictor.declare(
                    name,
                    HandlerDefaults(
                        duration_s=t.default_duration_s,
                        cpu_s=t.default_cpu_s,
                        memory_bytes=t.default_memory_bytes,
                        items_field=t.items_field,
                        cpu_bound=t.kind == "cpu",
                    ),
                )
        self._schedule_liveness(now + self.config.agent_silence_s)
        for h in agent.handlers:
            self._handler_offers[h] = self._handler_offers.get(h, 0) + 1
        self._membership_changed(now)
        for key in running:
            task = self._task_for(key)
            reclaim = task is not None and task.attempt == key[2] and not task.agent_id
            if task is not None and reclaim and not task.terminal:
                # The task was requeued when the agent vanished; take the running attempt back
                # from wherever it waits again (queued, or throttled by its keys or a circuit).
                self._leave_wait(task)
                task.state = TaskState.RUNNING
                task.agent_id = agent_id
                agent.hold(key, task)
                self._emit(task, TaskState.RUNNING, now)
                # The attempt keeps the deadline it had before the reconnect.
                self._push_timer(task.deadline, TimerKind.DEADLINE, task, task.attempt)
            else:
                self.outbox.cancels.setdefault(agent_id, []).append(key)
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
        self.balancer.agent_left(agent_id)
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
        agent.in_flight.clear()
        agent.capped_in_flight.clear()
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
        for key in not_started:
            self.balancer.ended(agent_id, key, now)
            task = agent.release(key)
            if task is None or task.terminal or task.attempt != key[2]:
                continue
            task.agent_id = ""
            self._make_ready(task, now)
        self._dispatch(now)

    def heartbeat(
        self,
        agent_id: str,
        running: int,
        cpu_percent: float,
        memory_percent: float,
        now: float,
        *,
        process_cpu_percent: float = 0.0,
    ) -> None:
        """An agent's load: its machine's CPU and memory and its own processes' CPU, each 0-100
        (a value outside that, or not finite, is clamped into it)."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.running = running
            agent.cpu_percent = _percent(cpu_percent)
            agent.memory_percent = _percent(memory_percent)
            agent.process_cpu_percent = _percent(process_cpu_percent)
            agent.last_heartbeat = now

    def started(self, agent_id: str, keys: Iterable[AttemptKey], now: float) -> None:
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.last_heartbeat = now
        for key in keys:
            task = self._task_for(key)
            if (
                task is not None
                and task.state == TaskState.DISPATCHED
                and task.attempt == key[2]
                and task.agent_id == agent_id
            ):
                task.state = TaskState.RUNNING
                self.balancer.started(agent_id, key, now)
                # Start-to-close runs from the start: a prefetched attempt may have waited.
                task.deadline = now + task.timeout_s + self.config.timeout_grace_s
                self._emit(task, TaskState.RUNNING, now)
                self._push_timer(task.deadline, TimerKind.DEADLINE, task, task.attempt)
                hb = task.spec.heartbeat_timeout_s
                if hb > 0:
                    task.progress_at = now
                    self._push_timer(now + hb, TimerKind.HEARTBEAT, task, task.attempt)

    def progress(self, agent_id: str, keys: Iterable[AttemptKey], now: float) -> None:
        """Long attempts showed life (TaskContext.progress): their heartbeat timeouts restart."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.last_heartbeat = now
        for key in keys:
            task = self._task_for(key)
            if (
                task is not None
                and task.state == TaskState.RUNNING
                and task.attempt == key[2]
                and task.agent_id == agent_id
            ):
                task.progress_at = now

    def finished(self, agent_id: str, results: Sequence[AttemptResult], now: float) -> None:
        """Apply a batch of attempt results from one agent, then refill its credit."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.last_heartbeat = now
            self._observe_completions(agent, len(results), now)
        balancer = self.balancer
        for result in results:
            key = result.key
            task = agent.release(key) if agent is not None else None
            balancer.ended(agent_id, key, now)
            if task is None:
                task = self._task_for(key)
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
                self._record_success(task, agent_id, now)
                if result.run_s > 0:
                    self._learn(task, agent_id, result, now)
                if not current and task.agent_id:
                    # An earlier attempt won the race: stop the current one.
                    self.outbox.cancels.setdefault(task.agent_id, []).append(task.key)
                task.output = result.output
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
                self._record_failure(task, agent_id, err, cls, now)
                self._attempt_failed(task, err, now, cls=cls, metadata=result.metadata)
            else:
                self.counters.stale_results += 1
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

    def _membership_changed(self, now: float) -> None:
        self._membership_changed_at = now
        self._push_timer(now + self.config.unknown_handler_grace_s, TimerKind.ORPHAN_SWEEP, None)

    def _handler_unknown(self, handler: str, now: float) -> bool:
        """True when agents are connected, settled, and none offers ``handler``."""
        return (
            bool(self.agents)
            and self._handler_offers.get(handler, 0) <= 0
            and now - self._membership_changed_at >= self.config.unknown_handler_grace_s
        )

    def _unknown_handler_error(self, handler: str) -> TaskError:
        known = ", ".join(self.known_handlers()) or "none"
        return TaskError(
            ErrorKind.UNKNOWN_HANDLER,
            f"no connected agent offers handler {handler!r} (known handlers: {known}); install "
            "it on an agent (entry point group 'deerflow.handlers' or --handler module:attr) "
            "and resubmit",
        )

    def _fail_orphans(self, now: float) -> None:
        for handler, labels in self.ready.waiting():
            if self._handler_unknown(handler, now):
                error = self._unknown_handler_error(handler)
            elif labels and self._labels_unmatched(handler, labels, now):
                error = self._unmatched_labels_error(handler, labels)
            else:
                continue
            for task in self.ready.drain(handler, labels):
                self._finish(task, TaskState.FAILED, now, error=error)

    def _labels_unmatched(self, handler: str, labels: Mapping[str, str], now: float) -> bool:
        """True when agents are settled and none that offers ``handler`` carries ``labels``."""
        if now - self._membership_changed_at < self.config.unknown_handler_grace_s:
            return False
        return not any(
            handler in a.handlers and labels_match(labels, a.labels) for a in self.agents.values()
        )

    def _unmatched_labels_error(self, handler: str, labels: Mapping[str, str]) -> TaskError:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return TaskError(
            ErrorKind.UNKNOWN_HANDLER,
            f"no connected agent that offers handler {handler!r} carries the labels {wanted}; "
            "start an agent with those labels (deerflow-agent --label KEY=VALUE) or change the "
            "task's labels, and resubmit",
        )

    def _may_become_ready(self, task: Task) -> bool:
        """Whether ``task`` waits for nothing that will make it ready by itself. A task becomes
        ready from PENDING once its dependencies succeeded, from QUEUED outside every queue (a
        retry's delay ended, a restored task released, a dedup follower whose leader failed, a
        circuit that held it changed), or when an agent gives its attempt back (DISPATCHED or
        RUNNING, no agent). Anything else (queued, THROTTLED in a gate or on a circuit,
        following a leader, split, terminal) is ready already or never again: making it ready
        once more would queue it twice and count it twice (issue #13)."""
        state = task.state
        if state == TaskState.PENDING:
            return task.waiting_on == 0
        if state == TaskState.QUEUED:
            return not task.ready_seq and task.cache_leader is None
        if state in (TaskState.DISPATCHED, TaskState.RUNNING):
            return not task.agent_id and not isinstance(task.split, SplitRun)
        return False

    def _leave_wait(self, task: Task) -> None:
        """Take a ready task out of whatever it waits in (the ready queue, its first rate key's
        gate, a circuit), so each wait's count gives back what :meth:`_make_ready` took. Call
        before changing the task's state; a task that waits in none is left alone."""
        self.ready.discard(task)
        self.limiter.discard(task)
        # Its entry in _parked is skipped when the circuit changes.
        task.parked_on = ""

    def _make_ready(self, task: Task, now: float, detail: str = "") -> None:
        """Release a task that waits for nothing any more to the ready queue, its rate keys'
        gates, the cache or the decomposer. Idempotent: a task that is ready already, or
        terminal, is left as it is (see :meth:`_may_become_ready`)."""
        if not self._may_become_ready(task):
            return
        spec = task.spec
        if self._handler_unknown(spec.handler, now):
            error = self._unknown_handler_error(spec.handler)
            self._finish(task, TaskState.FAILED, now, error=error)
            return
        if spec.labels and self.agents and self._labels_unmatched(spec.handler, spec.labels, now):
            error = self._unmatched_labels_error(spec.handler, spec.labels)
            self._finish(task, TaskState.FAILED, now, error=error)
            return
        if spec.schedule_to_close_s > 0 and not task.close_at:
            # Across all attempts, from the first time the task is ready (Temporal's); armed
            # before splitting or a cache flight, which it bounds too.
            task.close_at = now + spec.schedule_to_close_s
            self._push_timer(task.close_at, TimerKind.SCHEDULE_TO_CLOSE, task)
        if task.split is None and task.parent is None and self._split(task, now):
            return
        if self.cache is not None and task.cache_key is None and self._from_cache(task, now):
            return
        if spec.schedule_to_start_s > 0 and task.scheduled_attempt != task.attempt:
            # Each attempt gets its own schedule-to-start, as in Temporal.
            task.scheduled_attempt = task.attempt
            self._push_timer(
                now + spec.schedule_to_start_s, TimerKind.SCHEDULE_TO_START, task, task.attempt
            )
        if task.spec.rate_keys and task.rate_hold is None:
            # (A task still holding its admission, an attempt given back unstarted, goes
            # straight to the ready queue: its request was never sent, so nothing is owed.)
            if detail:
                self._emit(task, TaskState.QUEUED, now, detail=detail)
            self.limiter.offer(task, now)
            self._offered.append(task)
            return
        self._push_ready(task, now)
        self._emit(task, TaskState.QUEUED, now, detail=detail)

    def _release_throttled(self, now: float) -> None:
        """Move tasks whose rate keys have room into the ready queue; report the rest
        THROTTLED once; arrange to be ticked when time alone can admit more."""
        limiter = self.limiter
        if not self._offered and not limiter.waiting:
            return
        # Admit no more than agents can take now: an admitted task is charged to its keys, and
        # tasks admitted while nothing can run them would later leave in one burst.
        room = max(0, sum(a.credit for a in self.agents.values()) - len(self.ready))
        released = limiter.release(now, room)
        for task in released:
            self._push_ready(task, now)
            self._emit(task, TaskState.QUEUED, now)
        for task in self._offered:
            if task.state == TaskState.THROTTLED:
                limiter.note_waiting(task)
                self._emit(task, TaskState.THROTTLED, now)
        self._offered.clear()
        if len(released) >= room:
            return  # agents are full: a finishing attempt calls us again, no timer needed
        nxt = limiter.next_release(now)
        if nxt is not None:
            # Never re-arm at this very instant: room was there, so time must pass first.
            nxt = max(nxt, now + 1e-3)
        if nxt is not None and (nxt < self._rate_timer_at or self._rate_timer_at <= now):
            self._rate_timer_at = nxt
            self._push_timer(nxt, TimerKind.RATE_RELEASE, None)

    def _dispatch(self, now: float) -> None:
        """Fill agents' credit from the ready queue: each agent in turn takes its best task,
        which goes to the agent the balancer predicts finishes it first (the puller itself for
        tasks too short to be worth placing: round-robin spreads a burst). Then idle agents may
        take over attempts prefetched to lagging ones."""
        self._release_throttled(now)
        if not self.agents:
            return
        # Tasks parked on an open circuit give back the room they were admitted into, so
        # admit again, or throttled tasks would wait for an unrelated event (issue #13).
        while len(self.ready) and self._fill(now) and self.limiter.waiting:
            self._release_throttled(now)
        if self.config.steal and len(self.agents) > 1 and not len(self.ready):
            self._steal(now)
        if not len(self.ready) and not self.limiter.waiting:
            self._preload(now)

    def _fill(self, now: float) -> int:
        """Give agents with credit their best ready tasks; returns how many tasks it parked on
        open circuits instead."""
        parked = 0
        agents = [a for a in self.agents.values() if a.credit > 0]
        if not agents:
            return parked
        # Rotate the starting agent so ties do not always favour the same one.
        self._rr = (self._rr + 1) % len(agents)
        agents = agents[self._rr :] + agents[: self._rr]
        breakers, quarantined = self.breakers, self._quarantined
        place = len(self.agents) > 1
        placement_min = self.config.placement_min_s
        all_agents = self.agents.values()
        # Tasks no agent can take now go back to the queue, in their place, after this round:
        # put back at once, one would come out first again and hold up the tasks behind it.
        waiting: list[Task] = []
        while agents and len(self.ready):
            still: list[AgentView] = []
            for agent in agents:
                handlers = agent.open_handlers()
                if quarantined and agent.id in quarantined:
                    handlers = [h for h in handlers if h not in quarantined[agent.id]]
                task = self.ready.pop_for(handlers, agent.labels)
                if task is None:
                    continue
                if not breakers.all_closed:
                    refused = breakers.allow_all(self._circuit_keys(task), now, task.id)
                    if refused is not None:
                        self._park(task, refused, now)
                        parked += 1
                        still.append(agent)
                        continue
                target = agent
                if place and task.predicted_s >= placement_min:
                    # The puller first: on a tie it keeps the task, so a burst still spreads.
                    candidates = [agent, *(a for a in all_agents if a is not agent)]
                    choice = self._place(task, candidates, now)
                    if choice is None:
                        # Every eligible agent is over its ceilings and busy: wait for room.
                        waiting.append(task)
                        continue
                    target = choice
                self._assign(task, target, now)
                if agent.credit > 0:
                    still.append(agent)
            agents = still
        for task in waiting:
            self._push_ready(task, now)
        return parked

    def _assign(self, task: Task, agent: AgentView, now: float, detail: str = "") -> None:
        task.attempt += 1
        task.state = TaskState.DISPATCHED
        task.agent_id = agent.id
        agent.hold(task.key, task)
        batch = self.outbox.assignments.get(agent.id)
        if batch is None:
            batch = self.outbox.assignments[agent.id] = []
        batch.append(task)
        if task.predicted_s >= 0:
            speed = self.predictor.handler_speed(task.spec.handler, agent.id) or 1.0
            task.predicted_run_s = task.predicted_s / speed
            if task.predicted_s >= self.config.placement_min_s:
                # Tasks too short to place are left out of the agents' predicted backlogs.
                self.balancer.assigned(agent.id, task.key, task.predicted_run_s)
        self._emit(task, TaskState.DISPATCHED, now, detail=detail, predicted_s=task.predicted_run_s)
        task.deadline = now + task.timeout_s + self.config.timeout_grace_s
        self._push_timer(task.deadline, TimerKind.DEADLINE, task, task.attempt)

    def _push_ready(self, task: Task, now: float) -> None:
        """Queue a ready task, ranked LPT-first within its priority (longest predicted first
        within a burst; a task that waited longer than the balancer's cap goes first anyway)."""
        pred = task.predicted_s
        if pred < 0:
            spec = task.spec
            traits = self.traits.get(spec.handler)
            feats = features(spec.payload, traits.items_field if traits is not None else "")
            task.features = feats
            pred = task.predicted_s = self.predictor.predict(
                spec.handler, feats, hint_s=spec.est_duration_s
            ).duration_s
        self.ready.push(task, now, now - min(pred, self.balancer.config.lpt_max_advance_s))

    # ----------------------------------------------------------------- terminal states
    # Functions of core_terminal.py, bound here as methods.
    _forget_in_flight = core_terminal.forget_in_flight
    _release_slot_by_cancel = core_terminal.release_slot_by_cancel
    _attempt_failed = core_terminal.attempt_failed
    _finish = core_terminal.finish
    _fail_dependents = core_terminal.fail_dependents
    _terminal = core_terminal.terminal
    _emit = core_terminal.emit
