"""Command-line value types shared by every entry point (controller, agent, CLI, simulator)."""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["FiniteFloatRange"]


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities.

    Click's range check compares with the bounds, and every comparison with NaN is false, so
    ``--default-timeout nan`` would pass a plain ``FloatRange`` and poison every deadline computed
    from it. The bounds are inclusive unless ``min_open``/``max_open`` say otherwise.
    """

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if isinstance(rv, float) and not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv
