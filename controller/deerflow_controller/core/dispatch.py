"""Admission and dispatch in the scheduling core: a task that waits for nothing becomes ready
(or fails at once for an unknown handler or unmatched labels, or goes to the decomposer, the
cache or its rate keys' gates), and ready tasks go to agents with credit. Functions of
:class:`~deerflow_controller.core.state.SchedulerCore`, bound to it as methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from deerflow_controller.core.inputs import wants_inputs
from deerflow_controller.core.model import (
    AgentView,
    AttemptKey,
    CachePolicy,
    ErrorKind,
    Task,
    TaskError,
    TaskState,
)
from deerflow_controller.core.ready_queue import labels_match
from deerflow_controller.core.timers import TimerKind
from deerflow_controller.core.types import SplitRun

if TYPE_CHECKING:
    from deerflow_controller.core.state import SchedulerCore

_RATE_WINDOW_S = 0.05
"""An agent's completion rate is measured over windows at least this long."""
_RATE_ALPHA = 0.3
"""Weight of the newest window when an agent's completion rate falls (a rise counts at once)."""


def membership_changed(self: SchedulerCore, now: float) -> None:
    self._membership_changed_at = now
    self._push_timer(now + self.config.unknown_handler_grace_s, TimerKind.ORPHAN_SWEEP, None)


def handler_unknown(self: SchedulerCore, handler: str, now: float) -> bool:
    """True when agents are connected, settled, and none offers ``handler``."""
    return (
        bool(self.agents)
        and self._handler_offers.get(handler, 0) <= 0
        and now - self._membership_changed_at >= self.config.unknown_handler_grace_s
    )


def unknown_handler_error(self: SchedulerCore, handler: str) -> TaskError:
    known = ", ".join(self.known_handlers()) or "none"
    return TaskError(
        ErrorKind.UNKNOWN_HANDLER,
        f"no connected agent offers handler {handler!r} (known handlers: {known}); install "
        "it on an agent (entry point group 'deerflow.handlers' or --handler module:attr) "
        "and resubmit",
    )


def fail_orphans(self: SchedulerCore, now: float) -> None:
    for handler, labels in self.ready.waiting():
        if self._handler_unknown(handler, now):
            error = self._unknown_handler_error(handler)
        elif labels and self._labels_unmatched(handler, labels, now):
            error = self._unmatched_labels_error(handler, labels)
        else:
            continue
        for task in self.ready.drain(handler, labels):
            self._finish(task, TaskState.FAILED, now, error=error)


def labels_unmatched(
    self: SchedulerCore, handler: str, labels: Mapping[str, str], now: float
) -> bool:
    """True when agents are settled and none that offers ``handler`` carries ``labels``."""
    if now - self._membership_changed_at < self.config.unknown_handler_grace_s:
        return False
    return not any(
        handler in a.handlers and labels_match(labels, a.labels) for a in self.agents.values()
    )


def unmatched_labels_error(
    self: SchedulerCore, handler: str, labels: Mapping[str, str]
) -> TaskError:
    wanted = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return TaskError(
        ErrorKind.UNKNOWN_HANDLER,
        f"no connected agent that offers handler {handler!r} carries the labels {wanted}; "
        "start an agent with those labels (deerflow-agent --label KEY=VALUE) or change the "
        "task's labels, and resubmit",
    )


def may_become_ready(self: SchedulerCore, task: Task) -> bool:
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


def leave_wait(self: SchedulerCore, task: Task) -> None:
    """Take a ready task out of whatever it waits in (the ready queue, its first rate key's
    gate, a circuit), so each wait's count gives back what :meth:`_make_ready` took. Call
    before changing the task's state; a task that waits in none is left alone."""
    self.ready.discard(task)
    self.limiter.discard(task)
    # Its entry in _parked is skipped when the circuit changes.
    task.parked_on = ""


def make_ready(self: SchedulerCore, task: Task, now: float, detail: str = "") -> None:
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
    if (
        self.cache is not None
        and task.cache_key is None
        # What a task that reads its dependencies' outputs returns depends on more than its
        # request, so the cache, keyed by the request, never answers or dedups it.
        and not (spec.inputs or spec.inputs_all)
        and (task.parent is None or not wants_inputs(task.parent.spec))
        and self._from_cache(task, now)
    ):
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


def release_roots(self: SchedulerCore, roots: list[Task], now: float) -> None:
    """:func:`make_ready` for each root of a job just added (PENDING, waiting on nothing), in
    order, with what depends only on a root's handler asked once per handler instead of once
    per task. A plain root (no labels, timers, rate keys, inputs or cache policy of its own)
    of a handler that is offered, never splits here and is never looked up in the cache is
    queued as make_ready would queue it, its cache skip counted with its handler's; every
    other root goes through make_ready (``tests/unit/test_scheduler_roots.py`` holds the two
    equal). A large submit of plain roots is the common case: DeerFlow's fan-outs, the no-op
    benchmark."""
    plain: dict[str, bool] = {}
    skipped: dict[str, int] = {}
    queued, default = TaskState.QUEUED, CachePolicy.DEFAULT
    push_ready, emit = self._push_ready, self._emit
    for task in roots:
        spec = task.spec
        handler = spec.handler
        short = plain.get(handler)
        if short is None:
            # Constant while the roots are released: no agent joins or leaves meanwhile, and
            # nothing adds a speculation the cache would attach a root to.
            short = plain[handler] = (
                not self._handler_unknown(handler, now)
                and not self._splits(handler)
                and self._cache_unlooked(handler, 0)
            )
        if (
            not short
            or spec.labels
            or spec.schedule_to_close_s > 0
            or spec.schedule_to_start_s > 0
            or spec.rate_keys
            or spec.inputs_all  # (a root names no inputs: they must be among its dependencies)
            or spec.cache != default
        ):
            self._make_ready(task, now)
            continue
        task.split = False  # what the decomposer marks a task it runs whole
        skipped[handler] = skipped.get(handler, 0) + 1
        push_ready(task, now)
        emit(task, queued, now)
    for handler, n in skipped.items():
        self._cache_unlooked(handler, n)


PLACEMENT_CANDIDATES = 64
"""Most agents the balancer compares for one task: all agents with credit up to this many
(every decision of a cluster that size is unchanged), else the puller and the agents with
credit that joined after it (wrapping), so placing a task costs O(1) in the agents, not
O(agents). The puller rotates, so the window moves over the whole cluster."""


SLOT_WAIT = "waiting for a free agent slot; its rate keys have room"
"""The detail of a THROTTLED event of a rate-keyed task held only because no agent can take it
yet (a task is admitted to its keys when it can be sent, so it waits in its keys' line)."""


def release_throttled(self: SchedulerCore, now: float) -> None:
    """Move tasks whose rate keys have room into the ready queue; report the rest
    THROTTLED once; arrange to be ticked when time alone can admit more."""
    limiter = self.limiter
    if not self._offered and not limiter.waiting:
        return
    # Admit no more than agents can take now: an admitted task is charged to its keys, and
    # tasks admitted while nothing can run them would later leave in one burst.
    room = max(0, self.credit_index.total - len(self.ready))
    released = limiter.release(now, room)
    for task in released:
        self._push_ready(task, now)
        self._emit(task, TaskState.QUEUED, now)
    agents_full = len(released) >= room
    for task in self._offered:
        if task.state != TaskState.THROTTLED:
            continue
        if agents_full and limiter.keys_have_room(task, now):
            # Admission waits for a slot to send it to (see above), not for its keys: say so,
            # and do not count it as a wait on a key.
            self._emit(task, TaskState.THROTTLED, now, detail=SLOT_WAIT)
        else:
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


def dispatch(self: SchedulerCore, now: float) -> None:
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


def fill(self: SchedulerCore, now: float) -> int:
    """Give agents with credit their best ready tasks; returns how many tasks it parked on
    open circuits instead."""
    parked = 0
    index = self.credit_index
    order = index.order  # the agents with credit, in join order (kept by the core)
    if not order:
        return parked
    # Rotate the starting agent so ties do not always favour the same one.
    self._rr = (self._rr + 1) % len(order)
    agents = order[self._rr :] + order[: self._rr]
    breakers, quarantined = self.breakers, self._quarantined
    place = len(self.agents) > 1
    placement_min = self.config.placement_min_s
    ready = self.ready
    # Tasks no agent can take now go back to the queue, in their place, after this round:
    # put back at once, one would come out first again and hold up the tasks behind it.
    waiting: list[Task] = []
    while agents and len(ready):
        still: list[AgentView] = []
        for agent in agents:
            if not len(ready):
                break  # the rest would find nothing either: O(tasks), not O(agents)
            handlers = agent.open_handlers()
            if quarantined and agent.id in quarantined:
                handlers = handlers - quarantined[agent.id]
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
                # Only agents with credit can be chosen (the balancer skips the rest); past
                # PLACEMENT_CANDIDATES of them, a window that moves with the puller.
                candidates = [agent, *index.others(agent, PLACEMENT_CANDIDATES - 1)]
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


def assign(self: SchedulerCore, task: Task, agent: AgentView, now: float, detail: str = "") -> None:
    task.attempt += 1
    task.state = TaskState.DISPATCHED
    task.agent_id = agent.id
    task.give(agent.id)
    agent.hold(task.key, task)
    self.credit_index.update(agent)
    batch = self.outbox.assignments.get(agent.id)
    if batch is None:
        batch = self.outbox.assignments[agent.id] = []
    batch.append(task)
    if task.predicted_s >= 0:
        self._assigned(task, agent)
    self._emit(task, TaskState.DISPATCHED, now, detail=detail, predicted_s=task.predicted_run_s)
    task.deadline = now + task.timeout_s + self.config.timeout_grace_s
    self._push_timer(task.deadline, TimerKind.DEADLINE, task, task.attempt)


def take_back(self: SchedulerCore, agent: AgentView, key: AttemptKey, now: float) -> None:
    """Cancel an attempt ``agent`` holds unstarted and free its slot at once (the task is the
    caller's to requeue or reassign)."""
    self.outbox.cancels.setdefault(agent.id, []).append(key)
    self.credit_index.release(agent, key)
    self._attempt_ended(agent.id, key, now)


def push_ready(self: SchedulerCore, task: Task, now: float) -> None:
    """Queue a ready task, ranked LPT-first within its priority (longest predicted first
    within a burst; a task that waited longer than the placement policy's cap goes first
    anyway; without a placement policy, FIFO)."""
    pred = task.predicted_s
    if pred < 0:
        pred = self._predict(task)
    self.ready.push(task, now, now - min(pred, self._lpt_max_advance_s))


def observe_completions(self: SchedulerCore, agent: AgentView, n: int, now: float) -> None:
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
    self.credit_index.update(agent)
