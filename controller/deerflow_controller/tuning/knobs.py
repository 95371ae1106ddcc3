"""The settings the tuner may turn, each read with its current value and its safe bounds.

A knob is read from the running controller at every step (:class:`Knob`: value, floor,
ceiling), because some bounds move with the cluster: the agents' own slots cap how many
attempts the controller may give one. The tuner only ever proposes a value inside
``[floor, ceiling]``; the shell applies it through a setter of the core.

Knobs the tuner does not turn, and why:

- the assignment batch size: there is no cap to tune; the shell sends one message per agent per
  event-loop turn, so batches grow with the rate by themselves;
- the result cache's capacity: a larger cache never lowers throughput or raises latency, so a
  hill climb would only ratchet it up to the memory ceiling, and its effect shows over the
  workload's repeat distance (minutes to hours), not within one tuner interval. The operator
  sizes it for memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "AGENT_SLOTS",
    "KNOB_NAMES",
    "PREFETCH",
    "RATE_KEY_CONCURRENCY",
    "Knob",
    "step_value",
]

AGENT_SLOTS = "agent_slots"
"""How many attempts the controller runs on one agent at once at most (beyond them, the
prefetch): the core's per-agent slot limit, at most what each agent declared."""
PREFETCH = "prefetch"
"""The least number of attempts an agent may hold beyond its slots (``--prefetch``)."""
RATE_KEY_CONCURRENCY = "rate_key_concurrency"
"""The ceiling of every rate key's adaptive concurrency limit (AIMD never grows past it)."""

KNOB_NAMES = (AGENT_SLOTS, PREFETCH, RATE_KEY_CONCURRENCY)
"""In the order the tuner considers them: capacity first."""


@dataclass(frozen=True, slots=True)
class Knob:
    """One knob as the controller has it now."""

    name: str
    value: int
    floor: int
    """The least safe value (the tuner never goes below)."""
    ceiling: int
    """The greatest safe value (the tuner never goes above)."""

    def __post_init__(self) -> None:
        if not self.floor <= self.ceiling:
            raise ValueError(f"knob {self.name}: floor {self.floor} above ceiling {self.ceiling}")

    def clamp(self, value: int) -> int:
        return min(self.ceiling, max(self.floor, value))


def step_value(knob: Knob, direction: int, factor: float) -> int:
    """The value one multiplicative step from ``knob.value`` (``direction`` +1 up, -1 down),
    always at least one unit away, clamped into the knob's bounds (so it may equal the current
    value when the knob is at a bound). ``factor`` > 1."""
    if not (math.isfinite(factor) and factor > 1.0):
        raise ValueError(f"step factor must be a finite number above 1, got {factor!r}")
    v = knob.value
    new = max(v + 1, round(v * factor)) if direction > 0 else min(v - 1, round(v / factor))
    return knob.clamp(new)
