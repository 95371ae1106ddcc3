"""The agents with credit, kept by the core as credit changes (issue #19 item 4).

Dispatch used to find the agents with credit, and their total, by walking every connected
agent: once per fill, per rate-key release and per placed task, so a round in which every agent
reports cost agents^2 (at 2,000 simulated agents most of the run was in ``fill``). The core now
calls :meth:`CreditIndex.update` wherever an agent's credit may change (an attempt held or
released, its slots, prefetch or draining changed, a join or a leave), and reads the set and
the total from here in O(1).

Order matters to decisions: ``fill`` rotates over the agents with credit in the order they
joined, and the balancer gives a tie to the first agent it is offered. ``order`` keeps exactly
that order (by ``AgentView.seq``, the core's join counter), so the index changes no decision;
it is a list kept sorted by bisection (O(log agents) to find, a C memmove to insert or
remove).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from operator import attrgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deerflow_controller.core.model import AgentView, AttemptKey, Task

__all__ = ["CreditIndex"]

_seq = attrgetter("seq")


class CreditIndex:
    """The connected agents whose credit is above 0, in join order, and the sum of every
    connected agent's credit. Only the core's :meth:`update` and :meth:`remove` change it."""

    __slots__ = ("_counted", "_joins", "order", "total")

    def __init__(self) -> None:
        self.order: list[AgentView] = []
        """Agents with credit > 0, by ``seq`` (join order). Read only; copy before a loop that
        may change credit."""
        self.total = 0
        """Sum of ``credit`` over connected agents."""
        self._counted: dict[str, int] = {}
        """The credit each agent in ``order`` was last counted with."""
        self._joins = 0

    def __len__(self) -> int:
        return len(self.order)

    def joined(self, agent: AgentView) -> None:
        """Count a newly connected agent, after every agent connected before it."""
        self._joins += 1
        agent.seq = self._joins
        self.update(agent)

    def release(self, agent: AgentView, key: AttemptKey) -> Task | None:
        """``agent.release(key)``, then count its credit again."""
        task = agent.release(key)
        self.update(agent)
        return task

    def update(self, agent: AgentView) -> None:
        """Count ``agent``'s credit as it is now (call after anything that may change it)."""
        # AgentView.credit, inlined: this runs twice for every task (hold and release); the
        # call cost 1.7 % of the controller's instructions. check_credit_index (model test)
        # holds the total to the property's definition.
        new = 0 if agent.draining else agent.slots + agent.prefetch - len(agent.in_flight)
        if new < 0:
            new = 0
        counted = self._counted
        old = counted.get(agent.id, 0)
        if new == old:
            return
        self.total += new - old
        if new > 0:
            counted[agent.id] = new
            if old == 0:
                insort(self.order, agent, key=_seq)
            return
        del counted[agent.id]
        self._drop(agent)

    def remove(self, agent: AgentView) -> None:
        """``agent`` left: it counts no more."""
        old = self._counted.pop(agent.id, 0)
        if old:
            self.total -= old
            self._drop(agent)

    def position(self, agent: AgentView) -> int:
        """Where ``agent`` is in ``order``, or -1 when it has no credit."""
        order = self.order
        i = bisect_left(order, agent.seq, key=_seq)
        return i if i < len(order) and order[i] is agent else -1

    def others(self, agent: AgentView, limit: int) -> list[AgentView]:
        """Agents with credit other than ``agent``, for placement: all of them in join order
        when there are at most ``limit``; else the ``limit`` that follow ``agent`` in join
        order, wrapping (a bounded window that moves with the puller, which ``fill`` rotates)."""
        order = self.order
        i = bisect_left(order, agent.seq, key=_seq)
        j = i + 1 if i < len(order) and order[i] is agent else i
        if len(order) - (j - i) <= limit:
            return order[:i] + order[j:]
        window = order[j : j + limit]
        if len(window) < limit:
            window += order[: min(i, limit - len(window))]
        return window

    def _drop(self, agent: AgentView) -> None:
        i = self.position(agent)
        if i >= 0:
            del self.order[i]
