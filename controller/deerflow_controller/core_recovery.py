"""Recovery glue of the core: feeding outcomes to the circuit breakers and the quarantine
judge (``recovery/``), holding tasks on open circuits, and turning their decisions into events
and notices. The retry decision itself is in :meth:`SchedulerCore._attempt_failed`."""

from __future__ import annotations

from .core import SchedulerCore
from .model import (
    ErrorClass,
    ErrorKind,
    Task,
    TaskError,
    TaskState,
)
from .recovery import (
    CircuitState,
    CircuitTransition,
    QuarantineAction,
    QuarantineDecision,
    about_the_provider,
    handler_key,
)
from .timers import TimerKind


class RecoveryMixin(SchedulerCore):
    """Circuit breakers and quarantine as the core uses them."""

    def _circuit_keys(self, task: Task) -> tuple[str, ...]:
        keys = task.circuit_keys
        if keys is None:
            keys = task.circuit_keys = (*task.spec.rate_keys, handler_key(task.spec.handler))
        return keys

    def _record_success(self, task: Task, agent_id: str, now: float) -> None:
        breakers = self.breakers
        for key in self._circuit_keys(task):
            transition = breakers.record_success(key, task.id, now)
            if transition is not None:
                self._circuit_changed(transition, now)
        decision = self.quarantine.record(
            agent_id, task.spec.handler, True, ErrorClass.UNSPECIFIED, now
        )
        if decision is not None:
            self._quarantine_changed(decision, now)

    def _record_failure(
        self, task: Task, agent_id: str, error: TaskError, cls: ErrorClass, now: float
    ) -> None:
        """Feed a failed attempt to the circuit breakers (when the provider is to blame) and to
        the quarantine judge (when the agent might be)."""
        if about_the_provider(error):
            for key in self._circuit_keys(task):
                transition = self.breakers.record_failure(key, task.id, cls, now)
                if transition is not None:
                    self._circuit_changed(transition, now)
        if error.kind != ErrorKind.AGENT_LOST:
            decision = self.quarantine.record(agent_id, task.spec.handler, False, cls, now)
            if decision is not None:
                self._quarantine_changed(decision, now)

    def _circuit_changed(self, t: CircuitTransition, now: float) -> None:
        self.outbox.notices.append(t.reason)
        if t.new == CircuitState.OPEN:
            self.counters.circuit_trips += 1
            self.circuit_reasons[t.key] = t.reason
        else:
            # Half-open or closed: the tasks waiting on it go back; the first to be dispatched
            # takes the half-open probe, the others wait again.
            for task in self._parked.pop(t.key, ()):
                if task.parked_on == t.key and task.state == TaskState.THROTTLED:
                    task.parked_on = ""
                    task.state = TaskState.QUEUED  # off the circuit, in no queue yet
                    self._make_ready(task, now, detail=t.reason)
        self._arm_recovery_timer(now)

    def _quarantine_changed(self, d: QuarantineDecision, now: float) -> None:
        self.outbox.notices.append(d.reason)
        agent = self.agents.get(d.agent)
        self._quarantined[d.agent] = self.quarantine.quarantined_handlers(d.agent, now)
        if not self._quarantined[d.agent]:
            del self._quarantined[d.agent]
        pair = (d.agent, d.handler)
        if d.action == QuarantineAction.QUARANTINED:
            self.quarantine_reasons[pair] = (d.reason, d.until)
        else:
            self.quarantine_reasons.pop(pair, None)
        if d.action == QuarantineAction.QUARANTINED:
            self.counters.quarantines += 1
            if agent is not None:
                # Take back what it has not started of that handler; it runs elsewhere.
                for key, task in list(agent.in_flight.items()):
                    if (
                        task.state == TaskState.DISPATCHED
                        and task.spec.handler == d.handler
                        and task.attempt == key[2]
                        and task.agent_id == agent.id
                    ):
                        self.outbox.cancels.setdefault(agent.id, []).append(key)
                        agent.release(key)
                        self.balancer.ended(agent.id, key, now)
                        task.agent_id = ""
                        self.limiter.end_attempt(task)
                        self._make_ready(task, now, detail=d.reason)
        self._arm_recovery_timer(now)

    def _arm_recovery_timer(self, now: float) -> None:
        times = [t for t in (self.breakers.next_change(now), self.quarantine.next_change(now)) if t]
        if not times:
            return
        when = max(min(times), now + 1e-3)
        if when < self._recovery_timer_at or self._recovery_timer_at <= now:
            self._recovery_timer_at = when
            self._push_timer(when, TimerKind.RECOVERY, None)

    def _advance_recovery(self, now: float) -> None:
        for t in self.breakers.advance(now):
            self._circuit_changed(t, now)
        for d in self.quarantine.advance(now):
            self._quarantine_changed(d, now)
        self._arm_recovery_timer(now)

    def _park(self, task: Task, key: str, now: float) -> None:
        """Hold a task whose circuit is open until it half-opens or closes (THROTTLED, with the
        circuit named in the event's detail). It gives back its rate slots meanwhile."""
        self.limiter.end_attempt(task)
        task.parked_on = key
        task.state = TaskState.THROTTLED
        self._parked.setdefault(key, []).append(task)
        snap = self.breakers.snapshot().get(key)
        until = f" until at least t={snap.until:.1f}" if snap is not None and snap.until else ""
        self._emit(task, TaskState.THROTTLED, now, detail=f"circuit {key} is open{until}")
        self._arm_recovery_timer(now)
