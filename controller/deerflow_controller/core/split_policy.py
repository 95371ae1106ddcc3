"""Decomposition glue of the core (issue #4): splitting a ready task into parts by the
decomposer's plan, running the parts as tasks the client never sees, and merging their outcomes
into the parent's one result."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from deerflow_controller.core.model import (
    ErrorKind,
    SplitPolicy,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.port import CorePort
from deerflow_controller.core.predictor import Predictor
from deerflow_controller.core.types import SplitRun
from deerflow_controller.decomposer import (
    Decomposer,
    DecomposerConfig,
    Merger,
    PartOutcome,
    SplitRequest,
    Splitter,
)

SplitFunctions = Callable[[str], tuple[Splitter | None, Merger | None]]
"""A handler's own splitter and merger, when its package is installed where the core runs."""


def no_split_functions(handler: str) -> tuple[Splitter | None, Merger | None]:
    """No handler has a splitter or merger of its own here."""
    return None, None


class Decomposition:
    """The decomposer as the core uses it: owns the decomposer and each handler's splitter and
    merger; talks to the core through its :class:`~deerflow_controller.core.port.CorePort`
    (installed with ``SchedulerCore.use_split``)."""

    __slots__ = ("_core", "_functions", "_predictor", "_split_cache", "decomposer")

    def __init__(
        self,
        core: CorePort,
        config: DecomposerConfig,
        predictor: Predictor,
        split_functions: SplitFunctions = no_split_functions,
    ) -> None:
        self._core = core
        self._predictor = predictor
        """The placement's duration estimates (per-item cost, I/O fraction)."""
        self.decomposer = Decomposer(config)
        self._functions = split_functions
        self._split_cache: dict[str, tuple[Splitter | None, Merger | None]] = {}

    def splits(self, handler: str) -> bool:
        """Whether :meth:`split` may split a task of ``handler``: False when the handler is
        undeclared, or declares no items and has no splitter here (then split() only marks
        the task to run whole)."""
        traits = self._core.traits.get(handler)
        return traits is not None and (
            bool(traits.items_field) or self._functions_of(handler)[0] is not None
        )

    def _functions_of(self, handler: str) -> tuple[Splitter | None, Merger | None]:
        functions = self._split_cache.get(handler)
        if functions is None:
            functions = self._split_cache[handler] = self._functions(handler)
        return functions

    def split(self, task: Task, now: float) -> bool:
        """Ask the decomposer how to run a ready task whose handler declares items (or has its
        own splitter here). True when the task was split (its parts are queued; it shows
        RUNNING until they are merged) or failed with a SPLIT_ERROR; False to run it whole."""
        core = self._core
        spec = task.spec
        traits = core.traits.get(spec.handler)
        task.split = False
        if spec.split == SplitPolicy.NEVER or traits is None:
            return False
        splitter, merger = self._functions_of(spec.handler)
        if not traits.items_field and splitter is None:
            return False
        predictor = self._predictor
        cost = predictor.item_cost(spec.handler)
        per_item = cost.per_item_s if cost.samples else traits.default_duration_s
        # A free slot means credit (a draining agent has none): only agents with credit.
        free = sum(
            max(0, a.slots - len(a.in_flight))
            for a in core.credit_index.order
            if spec.handler in a.handlers
        )
        request = SplitRequest(
            handler=spec.handler,
            payload=spec.payload,
            items_field=traits.items_field,
            kind="cpu" if traits.kind == "cpu" else "io",
            item_s=per_item or core.config.predictor.fallback_duration_s,
            free_slots=free,
            io_fraction=predictor.io_fraction(spec.handler) if cost.samples else None,
            parent_timeout_s=task.timeout_s,
            policy=spec.split,
        )
        plan = self.decomposer.plan(request, splitter=splitter, merger=merger)
        if isinstance(plan, TaskError):
            core.finish(task, TaskState.FAILED, now, error=plan)
            return True
        if not plan.split:
            return False
        job = task.job
        parts: list[Task] = []
        for part in plan.parts:
            part_spec = TaskSpec(
                id=f"{spec.id}#part-{part.index}",
                handler=spec.handler,
                payload=part.payload,
                priority=spec.priority,
                timeout_s=part.timeout_s,
                max_retries=spec.max_retries,
                labels=spec.labels,
                trace_context=spec.trace_context,
                rate_keys=spec.rate_keys,
                est_tokens=spec.est_tokens,
                tenant=spec.tenant,
                cache=spec.cache,
                split=SplitPolicy.NEVER,
                est_duration_s=part.est_duration_s,
            )
            p = Task(
                job=job,
                spec=part_spec,
                timeout_s=part.timeout_s or task.timeout_s,
                max_retries=task.max_retries,
                parent=task,
                part_index=part.index,
                split=False,
            )
            parts.append(p)
            job.parts[part_spec.id] = p
        for p, part in zip(parts, plan.parts, strict=True):
            p.waiting_on = len(part.depends_on)
            for dep in part.depends_on:
                parts[dep].add_dependent(p)
        task.split = SplitRun(
            plan,
            parts,
            self.decomposer.collector(plan, partial_results=spec.partial_results, merger=merger),
        )
        core.counters.split_tasks += 1
        task.state = TaskState.RUNNING
        core.emit(task, TaskState.RUNNING, now, detail=plan.reason)
        for p in parts:
            if not p.waiting_on:
                core.make_ready(p, now)
        return True

    def part_ended(self, part: Task, now: float) -> None:
        """A part reached a terminal state: feed its parent's collector; finish the parent
        once it is decided (and stop its other parts when it failed fast)."""
        parent = part.parent
        assert parent is not None
        run = parent.split
        if parent.terminal or not isinstance(run, SplitRun):
            return
        if part.state == TaskState.SUCCEEDED:
            outcome = PartOutcome(part.part_index, output=part.output)
        else:
            error = part.error or TaskError(
                ErrorKind.HANDLER_ERROR, f"part {part.part_index} failed"
            )
            outcome = PartOutcome(part.part_index, error=error)
        result = run.collector.add(outcome)
        if result is None:
            return
        if result.error is None:
            parent.output = result.output
            self._core.finish(parent, TaskState.SUCCEEDED, now, detail=result.detail)
        else:
            self._core.finish(
                parent, TaskState.FAILED, now, error=result.error, detail=result.detail
            )

    def cancel_parts(self, run: SplitRun, indices: Iterable[int], now: float) -> None:
        """Stop the given parts of a split task (each not yet ended ends CANCELLED)."""
        core = self._core
        error = TaskError(ErrorKind.CANCELLED_BY_CLIENT, "the task this part belongs to ended")
        for i in indices:
            part = run.parts[i]
            if not part.terminal:
                core.release_slot_by_cancel(part)
                core.terminal(part, TaskState.CANCELLED, now, error, None, None)
