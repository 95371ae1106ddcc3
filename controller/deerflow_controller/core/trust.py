"""What one agent may change for the others (issue #17 finding 3): a handler's traits, and
the load figures it reports about itself (bounded, so none reaches placement or the stats as
NaN or infinity).

Traits (``HandlerTraits``: kind, cacheable, items field, cold-start estimates...) are one
cluster-wide definition per handler, read by the cache, the decomposer and placement for every
task of that handler wherever it runs. The definition in force is the first one a connected
agent declared; while any agent offering the handler is connected, a Hello declaring other
traits for it is refused (``trait_conflict``), and if one slips in anyway (two Hellos racing)
its traits are ignored (``fresh_traits``). Only when no connected agent offers the handler may
the next agent redefine it (a handler upgraded by restarting its agents).

Why not the latest declaration (the old rule): one agent's Hello then redefined every other
agent's handler, so an impostor, or a single misconfigured agent, could make every cpu task fail
its split or turn caching on for a handler with side effects. Why not traits kept per agent: the
decisions that read them (split, cache lookup, prediction) are taken before a task is placed,
for the task, not for an agent; per-agent traits would make them depend on which agent is
chosen afterwards. Functions of :class:`~deerflow_controller.core.state.SchedulerCore`, bound to
it as methods; pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING

from deerflow_controller.core.model import HandlerTraits, Task
from deerflow_controller.core.validation import quote

if TYPE_CHECKING:
    from deerflow_controller.core.state import SchedulerCore

_TRAIT_FIELDS = tuple(f.name for f in fields(HandlerTraits))


def _in_force(self: SchedulerCore, handler: str) -> HandlerTraits | None:
    """The traits of ``handler`` that connected agents declared (None: no connected agent
    offers it, so whoever joins next defines them)."""
    if self._handler_offers.get(handler, 0) <= 0:
        return None
    return self.traits.get(handler)


def trait_conflict(self: SchedulerCore, declared: Mapping[str, HandlerTraits]) -> str | None:
    """Why a joining agent's traits may not be accepted, in a sentence naming the handler and
    the first trait that differs from the definition connected agents declared; None when
    every declared handler agrees with it (or is offered by no connected agent)."""
    for handler, traits in declared.items():
        known = _in_force(self, handler)
        if known is None or known == traits:
            continue
        for name in _TRAIT_FIELDS:
            mine, theirs = getattr(traits, name), getattr(known, name)
            if mine != theirs:
                return (
                    f"handler {quote(handler)} declares {name}={quote(str(mine), 64)}, but the "
                    f"agents already connected declare {name}={quote(str(theirs), 64)}; a "
                    "handler has one definition in the cluster: declare the same traits, or "
                    "drain every agent offering it before changing them"
                )
    return None


def fresh_traits(
    self: SchedulerCore, declared: Mapping[str, HandlerTraits]
) -> dict[str, HandlerTraits]:
    """The traits of ``declared`` to install: those of handlers no connected agent offers now
    (the first definition wins; see the module docstring). Called before the joining agent's
    handlers are counted as offered."""
    return {h: t for h, t in declared.items() if _in_force(self, h) is None}


def _percent(value: float) -> float:
    """A load figure an agent reported, made a finite 0-100 (NaN reads 0). The service refuses
    a figure that is not finite or negative (``wire.agent_numbers_problem``); this is the
    core's own guard, so no arithmetic downstream (placement, ``/api/stats``) sees one."""
    return min(100.0, max(0.0, value)) if math.isfinite(value) else (100.0 if value > 0 else 0.0)


def heartbeat(
    self: SchedulerCore,
    agent_id: str,
    running: int,
    cpu_percent: float,
    memory_percent: float,
    now: float,
    *,
    process_cpu_percent: float = 0.0,
) -> None:
    """An agent's load: its machine's CPU and memory and its own processes' CPU, each 0-100
    (a value outside that, or not finite, is clamped into it), and its running attempts
    (at least 0)."""
    agent = self.agents.get(agent_id)
    if agent is not None:
        agent.running = max(0, running)
        agent.cpu_percent = _percent(cpu_percent)
        agent.memory_percent = _percent(memory_percent)
        agent.process_cpu_percent = _percent(process_cpu_percent)
        agent.last_heartbeat = now


def may_reclaim(task: Task, attempt: int, agent_id: str) -> bool:
    """Whether a joining agent that reports ``attempt`` of ``task`` running keeps it: it is the
    task's current attempt, held by no agent now, and was given to this agent (or to nobody
    known: a restored task, whose holder the journal does not record)."""
    return task.attempt == attempt and not task.agent_id and task.held_by(attempt) in ("", agent_id)


def never(task: Task) -> bool:
    """Without a restore policy every task's holders are recorded."""
    return False
