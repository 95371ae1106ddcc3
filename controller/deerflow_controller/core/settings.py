"""Settings of the core that may change while it runs (the tuner's knobs, see
``deerflow_controller.tuning``): the per-agent slot limit, the prefetch floor and the rate keys'
concurrency ceiling. Functions of :class:`~deerflow_controller.core.state.SchedulerCore`, bound
there as methods; each applies at once and dispatches, as any event does.

Agents declare their slots (what they can run at once); the controller may give an agent fewer:
``slot_limit`` caps every agent's slots in the credit formula (slots + prefetch - unfinished),
never above what it declared. Lowering a limit cancels nothing: the agent's unfinished attempts
end as they would, and it gets new ones once below the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deerflow_controller.core.model import AgentView

if TYPE_CHECKING:
    from deerflow_controller.core.state import SchedulerCore


def limited_slots(self: SchedulerCore, agent_id: str, declared: int) -> int:
    """Remember what ``agent_id`` declared; the slots the core counts for it now."""
    declared = max(1, declared)
    self._declared_slots[agent_id] = declared
    limit = self.slot_limit
    return min(declared, limit) if limit > 0 else declared


def set_slot_limit(self: SchedulerCore, limit: int, now: float) -> None:
    """Give each agent at most ``limit`` slots (0: what each declared)."""
    if limit < 0:
        raise ValueError(f"slot limit must be >= 0, got {limit}")
    self.slot_limit = limit
    for agent in self.agents.values():
        agent.slots = limited_slots(self, agent.id, self._declared_slots.get(agent.id, 1))
        _fit_prefetch(self, agent)
    self._dispatch(now)


def set_prefetch(self: SchedulerCore, prefetch: int, now: float) -> None:
    """Make ``prefetch`` the least number of attempts an agent may hold beyond its slots (the
    ``SchedulerConfig.prefetch`` floor; the measured completion rate may still raise it)."""
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}")
    self.prefetch_floor = prefetch
    for agent in self.agents.values():
        _fit_prefetch(self, agent)
    self._dispatch(now)


def set_rate_key_ceiling(self: SchedulerCore, ceiling: int, now: float) -> None:
    """Cap every rate key's adaptive concurrency at ``ceiling`` (a key's stated concurrency
    still wins when lower), including keys first used later."""
    self.limiter.set_max_concurrency(ceiling)
    self._dispatch(now)


def declared_slots(self: SchedulerCore) -> int:
    """The most slots any connected agent declared (0 with none)."""
    return max((self._declared_slots.get(a, 0) for a in self.agents), default=0)


def _fit_prefetch(self: SchedulerCore, agent: AgentView) -> None:
    # The floor for its slots now, or what its completion rate asked for, at most its slots
    # (as observe_completions sizes it).
    floor = self.prefetch_for(agent.slots)
    agent.prefetch = max(floor, min(agent.prefetch, max(1, agent.slots)))
    self.credit_index.update(agent)
