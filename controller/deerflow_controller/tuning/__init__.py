"""The AutoPerformanceTuner: pure decisions over the controller's run-time knobs.

``tuner`` climbs (one change at a time, kept or reverted by the objective, with a noise band and
a cool-down), ``knobs`` names what it may turn and their bounds, ``objective`` scores a window of
measurements. The loop that measures, applies and reports lives at the edge
(``deerflow_controller.service.tuner_loop``); the core's setters are ``core/settings.py``.
"""

from __future__ import annotations

# Knobs
from deerflow_controller.tuning.knobs import (
    AGENT_SLOTS,
    KNOB_NAMES,
    PREFETCH,
    RATE_KEY_CONCURRENCY,
    Knob,
    step_value,
)

# Objective
from deerflow_controller.tuning.objective import Measurement, Objective, p95, pooled_score, score

# The tuner
from deerflow_controller.tuning.tuner import Action, Change, Mode, Outcome, Tuner, TunerConfig

__all__ = [
    "AGENT_SLOTS",
    "KNOB_NAMES",
    "PREFETCH",
    "RATE_KEY_CONCURRENCY",
    "Action",
    "Change",
    "Knob",
    "Measurement",
    "Mode",
    "Objective",
    "Outcome",
    "Tuner",
    "TunerConfig",
    "p95",
    "pooled_score",
    "score",
    "step_value",
]
