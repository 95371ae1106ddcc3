"""Which agent runs a task: least predicted completion time, LPT for bursts, work stealing.

Pure and deterministic: the core passes ``now`` and the agents it knows (:class:`AgentView`),
and durations come from the predictor, already computed once per task. Nothing here calls the
predictor per agent: a decision is O(agents) float operations and allocates one small tuple.

Three policies:

- :meth:`Balancer.choose` places one task. Eligible agents offer the handler (and have room
  under its per-handler cap), carry every label the task asks for, and have credit. Among
  those under the CPU and memory ceilings (from heartbeats) it picks the least predicted
  completion time: when a slot frees, plus ``duration / speed``. **No starvation:** when every
  eligible agent is over a ceiling, an eligible agent that holds nothing (so its load is not
  ours) still gets the task, one at a time, because an over-ceiling machine running one task
  makes progress and an idle cluster that refuses all work makes none. If none is idle, the
  answer is "wait"; the next heartbeat or result is the moment to ask again.
- :func:`lpt_key` orders ready tasks: priority first, then longest predicted first within a
  burst, with a bounded head start so a stream of long tasks cannot starve short ones.
- :meth:`Balancer.propose_steals` moves attempts sent to a lagging agent's prefetch, not yet
  started, to an idle agent that would finish them sooner, each with a reason.

When a slot frees comes from :class:`AgentLedger`, the predicted remaining work of everything
an agent holds (running and prefetched), kept incrementally: O(log k) per attempt event, O(1)
amortised to read.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from deerflow_controller.core.model import AgentView, AttemptKey, Task, TaskState

__all__ = [
    "AgentLedger",
    "Balancer",
    "BalancerConfig",
    "Choice",
    "Reason",
    "Steal",
    "lpt_key",
]


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """Placement knobs."""

    cpu_ceiling_percent: float = 80.0
    """An agent whose machine CPU (last heartbeat) is at or above this takes no new work while
    a cooler agent can: past 80 % run queues grow and every task on the machine slows. The
    machine's CPU (``cpu_percent``), not the agent's own processes' (``process_cpu_percent``):
    headroom is what the machine has left, and other work on it takes that as surely as ours."""
    memory_ceiling_percent: float = 80.0
    """Same for memory: past 80 % the next large task risks the OOM killer."""
    lpt_max_advance_s: float = 600.0
    """Longest head start a long task gets over a shorter one in the ready order. Within a
    burst this is pure LPT; a short task that has waited this long goes first regardless."""
    steal_min_gain_s: float = 0.05
    """Least predicted improvement in finish time for moving an attempt: a move costs a cancel
    and a dispatch (about a round trip) and risks the attempt having started meanwhile."""
    steal_min_gain_fraction: float = 0.2
    """...and at least this share of the attempt's duration, so moves are clearly worth it."""


class Reason(Enum):
    """Why a placement came out as it did (constants: no string building per task)."""

    LEAST_FINISH = "least predicted completion time among agents under the ceilings"
    IDLE_OVER_CEILING = (
        "every eligible agent is over its CPU/memory ceiling; this one holds nothing, so it "
        "takes the task rather than leave the cluster idle"
    )
    OVER_CEILING = "every eligible agent is over its CPU/memory ceiling and busy: wait"
    NO_AGENT = "no connected agent has the handler, the labels and credit: wait"
    LAGGING = "not started on a lagging agent; the idle agent finishes it sooner"


class Choice(NamedTuple):
    agent: AgentView | None
    """None: leave the task queued."""
    finish_s: float
    """Predicted completion time (absolute, the core's clock); inf when no agent."""
    reason: Reason


class Steal(NamedTuple):
    """A proposal: cancel ``key`` on ``from_agent`` (not started there) and send it to
    ``to_agent``. The core must check the attempt is still DISPATCHED when it acts."""

    key: AttemptKey
    from_agent: str
    to_agent: str
    gain_s: float
    """Predicted finish on ``from_agent`` minus predicted finish on ``to_agent``."""
    reason: Reason


def lpt_key(
    priority: int, ready_at: float, duration_s: float, seq: int, max_advance_s: float = 600.0
) -> tuple[int, float, int]:
    """Heap key for a ready task: smaller goes first.

    ``(-priority, ready_at - min(duration_s, max_advance_s), seq)``: higher priority first;
    within a priority, tasks made ready together (a burst) go longest first (LPT, which packs
    slots with a makespan within 4/3 of optimal), and a task's head start is its predicted
    duration, capped, so a short task that has waited longer than the cap beats any newcomer.
    The key is fixed when the task is pushed, so it is consistent with a binary heap."""
    advance = duration_s if duration_s < max_advance_s else max_advance_s
    return (-priority, ready_at - advance, seq)


class AgentLedger:
    """Predicted remaining work an agent holds, in that agent's seconds.

    Prefetched attempts count their whole predicted duration; running ones count until their
    predicted end. A running attempt past its predicted end counts as zero (the prediction was
    wrong; it could end any moment). Kept with sums and a heap of predicted ends, so reading
    the backlog is O(1) amortised and each attempt event O(log k)."""

    __slots__ = ("_ends", "_future_n", "_future_sum", "_pending_sum", "_t", "pending", "running")

    def __init__(self) -> None:
        self.pending: dict[AttemptKey, float] = {}
        """Held, not started: predicted duration on this agent, in dispatch order."""
        self.running: dict[AttemptKey, float] = {}
        """Started: predicted end time."""
        self._ends: list[tuple[float, AttemptKey]] = []
        self._pending_sum = 0.0
        self._future_sum = 0.0
        self._future_n = 0
        self._t = float("-inf")

    def assigned(self, key: AttemptKey, duration_s: float) -> None:
        self.pending[key] = duration_s
        self._pending_sum += duration_s

    def started(self, key: AttemptKey, now: float) -> None:
        duration = self.pending.pop(key, None)
        if duration is None:
            return
        self._pending_sum -= duration
        self._advance(now)
        end = now + duration
        self.running[key] = end
        if end > self._t:
            heapq.heappush(self._ends, (end, key))
            self._future_sum += end
            self._future_n += 1

    def ended(self, key: AttemptKey, now: float) -> None:
        """The attempt finished, failed, was cancelled or moved away."""
        duration = self.pending.pop(key, None)
        if duration is not None:
            self._pending_sum -= duration
            return
        end = self.running.pop(key, None)
        if end is None:
            return
        self._advance(now)
        if end > self._t:
            # Its heap entry stays and is skipped when reached (no longer in running).
            self._future_sum -= end
            self._future_n -= 1
            if len(self._ends) > 2 * len(self.running) + 64:
                # Attempts that end long before their prediction would pile up stale entries:
                # rebuild from the running ones (amortised O(1) per attempt).
                t = self._t
                self._ends = [(e, k) for k, e in self.running.items() if e > t]
                heapq.heapify(self._ends)

    def backlog_s(self, now: float) -> float:
        """Predicted seconds of work left across everything held (sum, not per slot)."""
        return self._pending_sum + self.running_s(now)

    def running_s(self, now: float) -> float:
        """Predicted seconds left of the started attempts (sum)."""
        if now > self._t:
            self._advance(now)
        running = self._future_sum - self._future_n * self._t if self._future_n else 0.0
        return max(running, 0.0)

    def _advance(self, now: float) -> None:
        if now <= self._t:
            return
        self._t = now
        ends, running = self._ends, self.running
        while ends and ends[0][0] <= now:
            end, key = heapq.heappop(ends)
            if running.get(key) == end:
                self._future_sum -= end
                self._future_n -= 1
        if not self._future_n:
            self._future_sum = 0.0  # forget float drift whenever nothing runs


class Balancer:
    """Placement of tasks on agents; keeps one :class:`AgentLedger` per agent.

    The core tells it about every attempt's life (``assigned``, ``started``, ``ended``) so that
    completion times include what agents already hold."""

    def __init__(self, config: BalancerConfig | None = None) -> None:
        self.config = config or BalancerConfig()
        self.ledgers: dict[str, AgentLedger] = {}
        self.prefetching: set[str] = set()
        """Agents whose ledger holds both running and unstarted attempts: only these can lag
        (every slot busy, attempts waiting behind them), so stealing looks at no other."""

    # ---------------------------------------------------------------- bookkeeping

    def ledger(self, agent_id: str) -> AgentLedger:
        ledger = self.ledgers.get(agent_id)
        if ledger is None:
            ledger = self.ledgers[agent_id] = AgentLedger()
        return ledger

    def assigned(self, agent_id: str, key: AttemptKey, duration_s: float) -> None:
        """An attempt was sent to the agent; ``duration_s`` is its prediction on that agent."""
        ledger = self.ledger(agent_id)
        ledger.assigned(key, duration_s)
        if ledger.running:
            self.prefetching.add(agent_id)

    def started(self, agent_id: str, key: AttemptKey, now: float) -> None:
        ledger = self.ledger(agent_id)
        ledger.started(key, now)
        if ledger.pending and ledger.running:
            self.prefetching.add(agent_id)
        else:
            self.prefetching.discard(agent_id)

    def ended(self, agent_id: str, key: AttemptKey, now: float) -> None:
        ledger = self.ledgers.get(agent_id)
        if ledger is not None:
            ledger.ended(key, now)
            if not (ledger.pending and ledger.running):
                self.prefetching.discard(agent_id)

    def agent_left(self, agent_id: str) -> None:
        self.ledgers.pop(agent_id, None)
        self.prefetching.discard(agent_id)

    def order_key(
        self, priority: int, ready_at: float, duration_s: float, seq: int
    ) -> tuple[int, float, int]:
        """:func:`lpt_key` with this balancer's ``lpt_max_advance_s``."""
        return lpt_key(priority, ready_at, duration_s, seq, self.config.lpt_max_advance_s)

    # ---------------------------------------------------------------- placement

    def slot_free_at(self, agent: AgentView, now: float) -> float:
        """When the agent can start one more attempt: now if it holds fewer than its slots,
        else after its backlog drains across its slots (a fluid approximation: exact for equal
        tasks, close when they differ, and O(1))."""
        held = len(agent.in_flight)
        if held < agent.slots:
            return now
        ledger = self.ledgers.get(agent.id)
        if ledger is None:
            return now
        return now + ledger.backlog_s(now) / agent.slots

    def choose(
        self,
        handler: str,
        labels: Mapping[str, str],
        duration_s: float,
        agents: Iterable[AgentView],
        speed: Callable[[str], float],
        now: float,
        *,
        cpu_bound: bool = True,
    ) -> Choice:
        """The agent to run one task, or None to keep it queued; see the module docstring.

        ``duration_s`` is the predicted duration on a reference agent (``Estimate.duration_s``
        without an agent id); ``speed(agent_id)`` the agent's relative speed (the predictor's
        ``agent_speed`` or ``handler_speed``). Ties go to the first agent in ``agents``, so the
        caller rotates the order if it wants ties spread. ``cpu_bound=False`` (io handlers)
        ignores the CPU ceiling. O(agents)."""
        cfg = self.config
        cpu_max, mem_max = cfg.cpu_ceiling_percent, cfg.memory_ceiling_percent
        if not cpu_bound:
            # An io-bound task waits on the network, not the CPU: a busy machine still runs
            # it on time, so only the memory ceiling applies.
            cpu_max = math.inf
        best: AgentView | None = None
        best_t = float("inf")
        idle: AgentView | None = None
        idle_t = float("inf")
        any_eligible = False
        ledgers = self.ledgers
        # Inlined credit and slot_free_at: this loop runs per task per agent.
        for agent in agents:
            if handler not in agent.handlers or agent.draining:
                continue
            held = len(agent.in_flight)
            slots = agent.slots
            if held >= slots + agent.prefetch:
                continue
            if agent.handler_caps:
                cap = agent.handler_caps.get(handler)
                if cap is not None and agent.capped_in_flight.get(handler, 0) >= cap:
                    continue
            if labels and not _has_labels(agent.labels, labels):
                continue
            any_eligible = True
            finish = now
            if held >= slots:
                ledger = ledgers.get(agent.id)
                if ledger is not None:
                    finish += ledger.backlog_s(now) / slots
            s = speed(agent.id)
            finish += duration_s / s if s > 0 else math.inf
            if agent.cpu_percent < cpu_max and agent.memory_percent < mem_max:
                if finish < best_t:
                    best, best_t = agent, finish
            elif not held and finish < idle_t:
                idle, idle_t = agent, finish
        if best is not None:
            return Choice(best, best_t, Reason.LEAST_FINISH)
        if idle is not None:
            return Choice(idle, idle_t, Reason.IDLE_OVER_CEILING)
        return Choice(None, float("inf"), Reason.OVER_CEILING if any_eligible else Reason.NO_AGENT)

    # ---------------------------------------------------------------- stealing

    def propose_steals(
        self,
        idle: AgentView,
        agents: Iterable[AgentView],
        speed: Callable[[str], float],
        now: float,
    ) -> list[Steal]:
        """Attempts prefetched to other agents, not started, that ``idle`` would finish
        sooner; largest gain first, at most the idle agent's free slots.

        An attempt's predicted start on its agent is when a slot frees there plus the work
        queued before it in that agent's prefetch, spread over its slots; on ``idle`` it starts
        now. Moves must gain ``steal_min_gain_s`` and ``steal_min_gain_fraction`` of the
        attempt's duration. Only tasks ``idle`` could take (handler, cap, labels) are moved,
        and none when ``idle`` is over a ceiling. O(attempts prefetched across agents)."""
        cfg = self.config
        free = min(idle.slots - len(idle.in_flight), idle.credit)
        if free <= 0 or idle.draining:
            return []
        if idle.cpu_percent >= cfg.cpu_ceiling_percent:
            return []
        if idle.memory_percent >= cfg.memory_ceiling_percent:
            return []
        to_speed = speed(idle.id) or 1e-9
        caps_left = {h: c - idle.capped_in_flight.get(h, 0) for h, c in idle.handler_caps.items()}
        found: list[tuple[float, Steal, str]] = []
        for agent in agents:
            ledger = self.ledgers.get(agent.id)
            if agent.id == idle.id or ledger is None or not ledger.pending:
                continue
            from_speed = speed(agent.id) or 1e-9
            # Prefetched attempts start as the running ones end (in transit if slots are free).
            start = now
            if len(ledger.running) >= agent.slots:
                start += ledger.running_s(now) / agent.slots
            queued_before = 0.0
            for key, held_s in ledger.pending.items():
                task_start = start + queued_before / agent.slots
                queued_before += held_s
                task = agent.in_flight.get(key)
                if task is None or task.state != TaskState.DISPATCHED or task.attempt != key[2]:
                    continue
                if not _can_take(idle, task):
                    continue
                there = task_start + held_s
                here = now + held_s * from_speed / to_speed
                gain = there - here
                if gain >= cfg.steal_min_gain_s and gain >= cfg.steal_min_gain_fraction * held_s:
                    steal = Steal(key, agent.id, idle.id, gain, Reason.LAGGING)
                    found.append((-gain, steal, task.spec.handler))
        found.sort(key=lambda f: f[0])
        taken: list[Steal] = []
        for _, steal, handler in found:
            if len(taken) >= free:
                break
            left = caps_left.get(handler)
            if left is not None:
                if left <= 0:
                    continue
                caps_left[handler] = left - 1
            taken.append(steal)
        return taken


def _has_labels(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def _can_take(agent: AgentView, task: Task) -> bool:
    spec = task.spec
    if spec.handler not in agent.handlers:
        return False
    return not spec.labels or _has_labels(agent.labels, spec.labels)
