"""The decomposer as the scheduling core sees it: one object, built from its config, that plans a
task's split and collects its parts' outcomes into the parent's result.

Pure and synchronous: no clock, no I/O. A handler's own splitter and merger (present only when
its package is installed in the controller's environment) run inside these calls, so they must be
quick; whatever they raise comes back as a SPLIT_ERROR, never as an exception.
"""

from __future__ import annotations

from deerflow_common.errors import TaskError
from deerflow_controller.decomposer._custom import plan_custom
from deerflow_controller.decomposer._merge import PartCollector
from deerflow_controller.decomposer._model import (
    DecomposerConfig,
    Merger,
    Plan,
    SplitRequest,
    Splitter,
    split_error,
)
from deerflow_controller.decomposer._plan import plan_items

__all__ = ["Decomposer"]


class Decomposer:
    """Split decisions and merges for the scheduling core."""

    def __init__(self, config: DecomposerConfig | None = None) -> None:
        self.config = config or DecomposerConfig()

    def plan(
        self,
        request: SplitRequest,
        *,
        splitter: Splitter | None = None,
        merger: Merger | None = None,
    ) -> Plan | TaskError:
        """How to run the task: a :class:`Plan` (whose strategy may be NONE: run it whole), or a
        SPLIT_ERROR naming the handler and the stage when its payload or its splitter is bad.
        With a splitter the handler decides the parts; otherwise its items field does.
        ``merger`` only tells the plan whether independent parts need item ranges."""
        try:
            if splitter is not None:
                return plan_custom(request, splitter, self.config, has_merger=merger is not None)
            return plan_items(request, self.config)
        except Exception as exc:
            # Every known bad input is answered above; this is a last resort so that a bug here
            # fails one task with a sentence instead of raising into the scheduling core.
            problem = f"the decomposer failed ({type(exc).__name__}: {exc})"
            return split_error(request.handler, "splitter", problem, "set split=NEVER")

    def collector(
        self, plan: Plan, *, partial_results: bool, merger: Merger | None = None
    ) -> PartCollector:
        """Where the core feeds the parts' final outcomes; it says when the parent is decided."""
        return PartCollector(plan, partial_results=partial_results, merger=merger)
