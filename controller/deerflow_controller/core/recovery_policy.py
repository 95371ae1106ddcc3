"""Recovery glue of the core: feeding outcomes to the circuit breakers and the quarantine
judge (``recovery/``), holding tasks on open circuits, deciding retries (budgets per error
class, decorrelated jitter: ``recovery.retry``), and turning their decisions into events and
notices. The core applies the retry decision (``core_terminal.attempt_failed``)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from deerflow_controller.core.model import ErrorClass, ErrorKind, Task, TaskError, TaskState
from deerflow_controller.core.port import CorePort
from deerflow_controller.core.timers import TimerKind
from deerflow_controller.recovery import (
    AgentQuarantine,
    CircuitBreakers,
    CircuitState,
    CircuitTransition,
    QuarantineAction,
    QuarantineDecision,
    RecoveryConfig,
    RetryDecision,
    RetryPolicy,
    RetryState,
    about_the_provider,
    handler_key,
)


class Recovery:
    """Circuit breakers and quarantine as the core uses them (installed with
    ``SchedulerCore.use_recovery``). Owns the retry policy and its random generator, the
    breakers, the quarantine judge, the tasks held on open circuits and the reasons shown in
    stats; talks to the core through its
    :class:`~deerflow_controller.core.port.CorePort`."""

    __slots__ = (
        "_core",
        "_handler_keys",
        "_retry_policy",
        "_rng",
        "_timer_at",
        "breakers",
        "circuit_reasons",
        "parked",
        "quarantine",
        "quarantine_reasons",
        "quarantined",
    )

    def __init__(self, core: CorePort, config: RecoveryConfig, *, seed: int | None = None) -> None:
        """``seed`` seeds the retry delays' jitter (None: from the system)."""
        self._core = core
        self._handler_keys: dict[str, tuple[str]] = {}
        """Per handler that ran: the circuit keys of its tasks without rate keys."""
        self._retry_policy = RetryPolicy(config.retry)
        self._rng = random.Random(seed)
        self.breakers = CircuitBreakers(config.breaker)
        self.quarantine = AgentQuarantine(config.quarantine)
        self.parked: dict[str, list[Task]] = {}
        """Tasks THROTTLED on an open circuit, by circuit key."""
        self.quarantined: dict[str, frozenset[str]] = {}
        """Agent id -> handlers it may not run now (quarantine)."""
        self._timer_at = math.inf
        """When the pending recovery timer is due (inf: none pending)."""
        self.circuit_reasons: dict[str, str] = {}
        """Why each circuit last opened (for stats and the dashboard)."""
        self.quarantine_reasons: dict[tuple[str, str], tuple[str, float]] = {}
        """(agent, handler) -> (why, until) while quarantined."""

    def circuit_keys(self, task: Task) -> tuple[str, ...]:
        """The circuits an attempt of ``task`` draws on (its rate keys and its handler)."""
        keys = task.circuit_keys
        if keys is None:
            spec = task.spec
            if spec.rate_keys:
                keys = (*spec.rate_keys, handler_key(spec.handler))
            else:
                # Most tasks draw on their handler's circuit alone: one tuple per handler.
                keys = self._handler_keys.get(spec.handler)
                if keys is None:
                    keys = self._handler_keys[spec.handler] = (handler_key(spec.handler),)
            task.circuit_keys = keys
        return keys

    def decide_retry(
        self, task: Task, error: TaskError, cls: ErrorClass, metadata: Mapping[str, str]
    ) -> RetryDecision:
        """Whether and when ``task`` runs again after a failed attempt: its budget for the
        error's class, a decorrelated-jitter delay with the provider's Retry-After as a floor
        (``recovery.retry``). Keeps the task's retry state on it."""
        state = task.retry
        if state is None:
            state = task.retry = RetryState()
        return self._retry_policy.decide(
            state, error, cls, metadata, max_retries=task.max_retries, rng=self._rng
        )

    def record_successes(self, tasks: Sequence[Task], agent_id: str, now: float) -> None:
        """Feed attempts of ``tasks`` that succeeded on ``agent_id`` at ``now`` (one agent's
        result message, in order) to the circuit breakers and the quarantine judge: as
        :meth:`record_success` for each in turn, but while every circuit is closed (then a
        success changes no circuit's state) each circuit's window and each handler's are
        updated once for all of them."""
        if not self.breakers.all_closed:
            for task in tasks:
                self.record_success(task, agent_id, now)
            return
        ids: dict[tuple[str, ...], list[str]] = {}
        handlers: dict[str, int] = {}
        circuit_keys = self.circuit_keys
        for task in tasks:
            keys = task.circuit_keys or circuit_keys(task)
            same = ids.get(keys)
            if same is None:
                ids[keys] = [task.id]
            else:
                same.append(task.id)
            handler = task.spec.handler
            handlers[handler] = handlers.get(handler, 0) + 1
        breakers = self.breakers
        for keys, task_ids in ids.items():
            for key in keys:
                breakers.record_successes(key, task_ids, now)
        for handler, n in handlers.items():
            if not self.quarantine.record_successes(agent_id, handler, n, now):
                for _ in range(n):  # the pair was sentenced: each may release it
                    self._quarantine_success(agent_id, handler, now)

    def record_success(self, task: Task, agent_id: str, now: float) -> None:
        """Feed a succeeded attempt to the circuit breakers and the quarantine judge."""
        breakers = self.breakers
        for key in self.circuit_keys(task):
            transition = breakers.record_success(key, task.id, now)
            if transition is not None:
                self._circuit_changed(transition, now)
        self._quarantine_success(agent_id, task.spec.handler, now)

    def _quarantine_success(self, agent_id: str, handler: str, now: float) -> None:
        decision = self.quarantine.record(agent_id, handler, True, ErrorClass.UNSPECIFIED, now)
        if decision is not None:
            self._quarantine_changed(decision, now)

    def record_failure(
        self, task: Task, agent_id: str, error: TaskError, cls: ErrorClass, now: float
    ) -> None:
        """Feed a failed attempt to the circuit breakers (when the provider is to blame) and to
        the quarantine judge (when the agent might be)."""
        if about_the_provider(error):
            for key in self.circuit_keys(task):
                transition = self.breakers.record_failure(key, task.id, cls, now)
                if transition is not None:
                    self._circuit_changed(transition, now)
        if error.kind != ErrorKind.AGENT_LOST:
            decision = self.quarantine.record(agent_id, task.spec.handler, False, cls, now)
            if decision is not None:
                self._quarantine_changed(decision, now)

    def _circuit_changed(self, t: CircuitTransition, now: float) -> None:
        core = self._core
        core.outbox().notices.append(t.reason)
        if t.new == CircuitState.OPEN:
            core.counters.circuit_trips += 1
            self.circuit_reasons[t.key] = t.reason
        else:
            # Half-open or closed: the tasks waiting on it go back; the first to be dispatched
            # takes the half-open probe, the others wait again.
            for task in self.parked.pop(t.key, ()):
                if task.parked_on == t.key and task.state == TaskState.THROTTLED:
                    task.parked_on = ""
                    task.state = TaskState.QUEUED  # off the circuit, in no queue yet
                    core.make_ready(task, now, detail=t.reason)
        self._arm_recovery_timer(now)

    def _quarantine_changed(self, d: QuarantineDecision, now: float) -> None:
        core = self._core
        core.outbox().notices.append(d.reason)
        agent = core.agents.get(d.agent)
        self.quarantined[d.agent] = self.quarantine.quarantined_handlers(d.agent, now)
        if not self.quarantined[d.agent]:
            del self.quarantined[d.agent]
        pair = (d.agent, d.handler)
        if d.action == QuarantineAction.QUARANTINED:
            self.quarantine_reasons[pair] = (d.reason, d.until)
        else:
            self.quarantine_reasons.pop(pair, None)
        if d.action == QuarantineAction.QUARANTINED:
            core.counters.quarantines += 1
            if agent is not None:
                # Take back what it has not started of that handler; it runs elsewhere,
                # keeping its rate admission (its request was never sent).
                for key, task in list(agent.in_flight.items()):
                    if (
                        task.state == TaskState.DISPATCHED
                        and task.spec.handler == d.handler
                        and task.attempt == key[2]
                        and task.agent_id == agent.id
                    ):
                        core.take_back(agent, key, now)
                        task.agent_id = ""
                        core.make_ready(task, now, detail=d.reason)
        self._arm_recovery_timer(now)

    def _arm_recovery_timer(self, now: float) -> None:
        times = [t for t in (self.breakers.next_change(now), self.quarantine.next_change(now)) if t]
        if not times:
            return
        when = max(min(times), now + 1e-3)
        if when < self._timer_at or self._timer_at <= now:
            self._timer_at = when
            self._core.push_timer(when, TimerKind.RECOVERY, None, 0)

    def advance(self, now: float) -> None:
        """A recovery timer fired: apply circuit and quarantine changes due by ``now`` (a timer
        superseded by an earlier one is ignored)."""
        if self._timer_at > now:
            return
        self._timer_at = math.inf
        for t in self.breakers.advance(now):
            self._circuit_changed(t, now)
        for d in self.quarantine.advance(now):
            self._quarantine_changed(d, now)
        self._arm_recovery_timer(now)

    def park(self, task: Task, key: str, now: float) -> None:
        """Hold a task whose circuit is open until it half-opens or closes (THROTTLED, with the
        circuit named in the event's detail). It gives back its rate slots meanwhile."""
        core = self._core
        core.limiter.end_attempt(task)
        task.parked_on = key
        task.state = TaskState.THROTTLED
        self.parked.setdefault(key, []).append(task)
        snap = self.breakers.snapshot().get(key)
        until = f" until at least t={snap.until:.1f}" if snap is not None and snap.until else ""
        core.emit(task, TaskState.THROTTLED, now, detail=f"circuit {key} is open{until}")
        self._arm_recovery_timer(now)
