"""Circuit breakers per rate key and per handler (``handler:<name>``).

A circuit opens only on failures correlated across tasks: within a sliding window of
``window_s`` it needs at least ``min_failures`` counted failures, from at least ``min_tasks``
distinct tasks, making up at least ``failure_ratio`` of the counted outcomes. One task failing
over and over therefore never opens it. Only ``counted`` classes are failures (transient and
timeout by default); 429s are left to the rate limiter, fatal and soft errors to the task.

States::

    CLOSED --trip--> OPEN --cool-down--> HALF_OPEN --probe succeeds--> CLOSED
                      ^                      |
                      +----probe fails-------+

OPEN lasts ``open_s * open_factor ** (streak - 1)`` capped at ``open_max_s``, where the streak
counts trips with no ``stable_s`` closed spell between them. HALF_OPEN admits exactly one probe
(:meth:`CircuitBreakers.allow` consumes it); only the probe's outcome counts, and a probe that
has not reported within ``probe_timeout_s`` makes way for another. Outcomes of attempts
dispatched before the circuit opened and reported while it is OPEN are ignored.

Pure: every method takes ``now``; cost per call is O(1) amortised (each outcome enters and
leaves a window once; timers are a lazily invalidated heap touched only on state changes).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from deerflow_common.errors import ErrorClass
from deerflow_controller.recovery.config import BreakerConfig

__all__ = ["CircuitBreakers", "CircuitSnapshot", "CircuitState", "CircuitTransition", "handler_key"]


def handler_key(handler: str) -> str:
    """The circuit key of a handler, beside the rate keys' own."""
    return f"handler:{handler}"


class CircuitState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class CircuitTransition:
    """One circuit changing state, with the numbers behind it and a sentence for events/logs."""

    key: str
    old: CircuitState
    new: CircuitState
    at: float
    until: float
    """When an OPEN circuit lets a probe through (0 for other states)."""
    failures: int
    total: int
    tasks: int
    """Distinct failing tasks in the window when it opened (0 otherwise)."""
    trips: int
    reason: str


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    state: CircuitState
    trips: int
    failures: int
    total: int
    until: float


@dataclass(slots=True, eq=False)
class _Circuit:
    key: str
    state: CircuitState = CircuitState.CLOSED
    outcomes: deque[tuple[float, str, bool]] = field(default_factory=deque)
    """(time, task id, failed) of counted outcomes within the window, oldest first."""
    failures: int = 0
    failing_tasks: dict[str, int] = field(default_factory=dict)
    """Failures per task within the window."""
    trips: int = 0
    streak: int = 0
    closed_at: float = 0.0
    until: float = 0.0
    probe: str | None = None
    """Task id of the admitted half-open probe ("" when admitted without one); None = none."""
    probe_at: float = 0.0


class CircuitBreakers:
    """All circuits, keyed by rate key or :func:`handler_key`. Unknown keys are CLOSED."""

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self._circuits: dict[str, _Circuit] = {}
        self._timers: list[tuple[float, str]] = []
        self._pending: list[CircuitTransition] = []
        self._not_closed = 0

    @property
    def all_closed(self) -> bool:
        """True when no circuit is OPEN or HALF_OPEN: the scheduler may skip :meth:`allow`."""
        return not self._not_closed

    # ----------------------------------------------------------------- outcomes

    def record_success(self, key: str, task_id: str, now: float) -> CircuitTransition | None:
        """An attempt drawing on ``key`` succeeded. Returns the transition to CLOSED when it was
        the half-open probe, else None."""
        c = self._circuits.get(key)
        if c is None:
            c = self._circuits[key] = _Circuit(key)
        self._refresh(c, now)
        if c.state == CircuitState.CLOSED:
            self._add(c, task_id, False, now)
            return None
        if c.state == CircuitState.OPEN or not self._is_probe(c, task_id):
            return None
        c.state, c.closed_at, c.probe = CircuitState.CLOSED, now, None
        self._not_closed -= 1
        self._clear(c)
        return self._transition(
            c, CircuitState.HALF_OPEN, now, 0, 0, 0, f"circuit {key} closed: the probe succeeded"
        )

    def record_successes(self, key: str, task_ids: Sequence[str], now: float) -> None:
        """Attempts of ``task_ids`` drawing on ``key`` succeeded, all at ``now``, while every
        circuit is CLOSED (:attr:`all_closed`; the caller checks): the same as
        :meth:`record_success` for each in turn, which changes no state then, at the cost of
        one window update for them all."""
        c = self._circuits.get(key)
        if c is None:
            c = self._circuits[key] = _Circuit(key)
        outcomes = c.outcomes
        outcomes.extend([(now, task_id, False) for task_id in task_ids])
        cap = self.config.max_events
        while len(outcomes) > cap:
            self._pop(c)
        self._trim(c, now)

    def record_failure(
        self, key: str, task_id: str, cls: ErrorClass, now: float
    ) -> CircuitTransition | None:
        """An attempt drawing on ``key`` failed with class ``cls``. Returns the transition when
        this failure opened the circuit (or reopened it: a failed probe), else None."""
        cfg = self.config
        if cls not in cfg.counted:
            return None
        c = self._circuits.get(key)
        if c is None:
            c = self._circuits[key] = _Circuit(key)
        self._refresh(c, now)
        if c.state == CircuitState.OPEN:
            return None
        if c.state == CircuitState.HALF_OPEN:
            if not self._is_probe(c, task_id):
                return None
            return self._open(c, now, CircuitState.HALF_OPEN, 1, 1, 1, "the probe failed")
        self._add(c, task_id, True, now)
        total, failures, tasks = len(c.outcomes), c.failures, len(c.failing_tasks)
        if (
            failures < cfg.min_failures
            or tasks < cfg.min_tasks
            or failures < cfg.failure_ratio * total
        ):
            return None
        why = (
            f"{failures} of {total} attempts failed ({100 * failures / total:.0f} %) from "
            f"{tasks} tasks within {cfg.window_s:g} s (thresholds: {cfg.min_failures} failures, "
            f"{cfg.min_tasks} tasks, {100 * cfg.failure_ratio:.0f} %)"
        )
        return self._open(c, now, CircuitState.CLOSED, failures, total, tasks, why)

    # ----------------------------------------------------------------- admission

    def allow(self, key: str, now: float, task_id: str = "") -> bool:
        """May an attempt drawing on ``key`` be dispatched now? CLOSED: yes. OPEN: no.
        HALF_OPEN: yes for exactly one probe (this call consumes it; pass the task's id so that
        only its outcome decides), no for the rest until it reports or times out."""
        c = self._circuits.get(key)
        if c is None:
            return True
        self._refresh(c, now)
        if c.state == CircuitState.CLOSED:
            return True
        if c.state == CircuitState.OPEN:
            return False
        if c.probe is not None and now < c.probe_at + self.config.probe_timeout_s:
            return False
        c.probe, c.probe_at = task_id, now
        heapq.heappush(self._timers, (now + self.config.probe_timeout_s, c.key))
        return True

    def blocking(self, keys: Iterable[str], now: float) -> str | None:
        """The first of ``keys`` whose circuit refuses an attempt now, or None; consumes no probe.
        With :meth:`allow_all` the scheduler checks every key of a task before taking probes."""
        for key in keys:
            c = self._circuits.get(key)
            if c is None:
                continue
            self._refresh(c, now)
            if c.state == CircuitState.OPEN or (
                c.state == CircuitState.HALF_OPEN
                and c.probe is not None
                and now < c.probe_at + self.config.probe_timeout_s
            ):
                return key
        return None

    def allow_all(self, keys: Iterable[str], now: float, task_id: str = "") -> str | None:
        """Admit an attempt drawing on all of ``keys``: None when admitted (taking the probe of
        every half-open one), else the key that refuses it (taking no probe at all)."""
        keys = tuple(keys)
        refused = self.blocking(keys, now)
        if refused is None:
            for key in keys:
                self.allow(key, now, task_id)
        return refused

    # ----------------------------------------------------------------- time and views

    def state(self, key: str, now: float) -> CircuitState:
        c = self._circuits.get(key)
        if c is None:
            return CircuitState.CLOSED
        self._refresh(c, now)
        return c.state

    def next_change(self, now: float) -> float | None:
        """When a circuit next changes by time alone (OPEN -> HALF_OPEN, or a half-open probe
        timing out): the scheduler arms a timer for it and calls :meth:`advance`."""
        timers = self._timers
        while timers:
            when, key = timers[0]
            if self._due(self._circuits[key]) == when:
                return when
            heapq.heappop(timers)
        return None

    def advance(self, now: float) -> list[CircuitTransition]:
        """Apply every change due by ``now``; returns the transitions since the last call
        (including those applied on the way by other methods), oldest first."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, key = heapq.heappop(timers)
            self._refresh(self._circuits[key], now)
        out, self._pending = self._pending, []
        return out

    def snapshot(self) -> dict[str, CircuitSnapshot]:
        """State, trips and window counts per known key, for metrics. States and counts are as
        last refreshed (call :meth:`advance` first for up-to-date states)."""
        return {
            k: CircuitSnapshot(c.state, c.trips, c.failures, len(c.outcomes), c.until)
            for k, c in self._circuits.items()
        }

    # ----------------------------------------------------------------- internals

    def _is_probe(self, c: _Circuit, task_id: str) -> bool:
        return c.probe is not None and (not c.probe or c.probe == task_id)

    def _due(self, c: _Circuit) -> float | None:
        if c.state == CircuitState.OPEN:
            return c.until
        if c.state == CircuitState.HALF_OPEN and c.probe is not None:
            return c.probe_at + self.config.probe_timeout_s
        return None

    def _refresh(self, c: _Circuit, now: float) -> None:
        if c.state == CircuitState.OPEN and now >= c.until:
            c.state, c.probe = CircuitState.HALF_OPEN, None
            self._pending.append(
                self._transition(
                    c,
                    CircuitState.OPEN,
                    now,
                    0,
                    0,
                    0,
                    f"circuit {c.key} half-open: cool-down over, one probe may go through",
                )
            )

    def _add(self, c: _Circuit, task_id: str, failed: bool, now: float) -> None:
        c.outcomes.append((now, task_id, failed))
        if failed:
            c.failures += 1
            c.failing_tasks[task_id] = c.failing_tasks.get(task_id, 0) + 1
        if len(c.outcomes) > self.config.max_events:
            self._pop(c)
        self._trim(c, now)

    def _trim(self, c: _Circuit, now: float) -> None:
        horizon = now - self.config.window_s
        outcomes = c.outcomes
        while outcomes and outcomes[0][0] <= horizon:
            self._pop(c)

    def _pop(self, c: _Circuit) -> None:
        _, task_id, failed = c.outcomes.popleft()
        if failed:
            c.failures -= 1
            left = c.failing_tasks[task_id] - 1
            if left:
                c.failing_tasks[task_id] = left
            else:
                del c.failing_tasks[task_id]

    def _clear(self, c: _Circuit) -> None:
        c.outcomes.clear()
        c.failing_tasks.clear()
        c.failures = 0

    def _open(
        self,
        c: _Circuit,
        now: float,
        old: CircuitState,
        failures: int,
        total: int,
        tasks: int,
        why: str,
    ) -> CircuitTransition:
        cfg = self.config
        if old == CircuitState.CLOSED:
            self._not_closed += 1
            if c.trips and now - c.closed_at >= cfg.stable_s:
                c.streak = 0
        c.streak += 1
        c.trips += 1
        cool = min(cfg.open_max_s, cfg.open_s * cfg.open_factor ** (c.streak - 1))
        c.state, c.until, c.probe = CircuitState.OPEN, now + cool, None
        self._clear(c)
        heapq.heappush(self._timers, (c.until, c.key))
        verb = "reopened" if old == CircuitState.HALF_OPEN else "opened"
        reason = (
            f"circuit {c.key} {verb}: {why}; a probe may go through in {cool:g} s "
            f"(trip {c.streak} in a row)"
        )
        return self._transition(c, old, now, failures, total, tasks, reason)

    def _transition(
        self,
        c: _Circuit,
        old: CircuitState,
        now: float,
        failures: int,
        total: int,
        tasks: int,
        reason: str,
    ) -> CircuitTransition:
        until = c.until if c.state == CircuitState.OPEN else 0.0
        return CircuitTransition(
            c.key, old, c.state, now, until, failures, total, tasks, c.trips, reason
        )
