"""What the decomposer takes and gives: its configuration, a split request, a plan and its parts,
and the structural types of a handler's own splitter and merger.

Plain frozen dataclasses with no clock, no gRPC and no import of the agent package: the controller
only needs a handler's traits as data, plus its splitter and merger when that handler's package is
installed in the controller's own environment (nothing executable crosses the wire).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from deerflow_common.errors import ErrorClass, ErrorKind, TaskError
from deerflow_controller.core.model import SplitPolicy
from deerflow_controller.core.validation import quote

__all__ = [
    "Analysis",
    "DecomposerConfig",
    "Merger",
    "Part",
    "Plan",
    "SplitPart",
    "SplitRequest",
    "Splitter",
    "Strategy",
    "split_error",
]


@dataclass(frozen=True, slots=True)
class DecomposerConfig:
    """Knobs of the split decision. Seconds throughout."""

    overhead_floor_s: float = 0.05
    """Least predicted run time of one part. Below it a part costs more in dispatch, stream
    messages, bookkeeping and merging than it saves; 50 ms is roughly ten times the controller's
    per-task cost plus a loopback round trip."""

    max_parts: int = 64
    """Most parts one task is split into, however long its list: a 100,000-item list becomes 64
    larger parts, not 100,000 tasks that would swamp the queue and the event log."""

    io_bound_fraction: float = 0.8
    """A handler whose measured io_fraction (share of wall time not on a CPU) is at least this
    counts as io-bound, i.e. wall/CPU >= 5x: its items can overlap inside one task."""

    item_concurrency: int = 16
    """Items an io handler runs at once inside one task when the handler does not declare its
    own; async batches are sized to keep this many in flight per part."""

    timeout_safety: float = 3.0
    """A part's start-to-close timeout is this times its predicted p90 run time, so a normal tail
    does not kill it while a hung part is still caught long before the parent's timeout."""

    timeout_floor_s: float = 5.0
    """Least part timeout: predictions of cheap items are noisy and a GC pause or a slow DNS
    lookup must not time out a part predicted to take 20 ms."""

    def __post_init__(self) -> None:
        if self.overhead_floor_s < 0 or self.timeout_floor_s < 0:
            raise ValueError("decomposer floors must be >= 0 seconds")
        if self.max_parts < 2:
            raise ValueError(f"max_parts must be >= 2, got {self.max_parts}")
        if self.item_concurrency < 1:
            raise ValueError(f"item_concurrency must be >= 1, got {self.item_concurrency}")
        if self.timeout_safety < 1:
            raise ValueError(f"timeout_safety must be >= 1, got {self.timeout_safety}")
        if not 0 < self.io_bound_fraction <= 1:
            raise ValueError(f"io_bound_fraction must be in (0, 1], got {self.io_bound_fraction}")


class Strategy(enum.Enum):
    """How a task is run."""

    NONE = "none"
    """Whole, as submitted: too few items, too cheap, no free slots to fill, or split=NEVER."""

    PARALLEL_CHUNKS = "parallel_chunks"
    """cpu-ish items: independent chunks, one per free slot, each above the overhead floor."""

    ASYNC_BATCHES = "async_batches"
    """io-bound items: fewer, larger parts, each keeping ``item_concurrency`` items in flight
    inside one task on the agent's event loop."""

    PIPELINE = "pipeline"
    """A chain of dependent parts, as the handler's own splitter returned them."""


@dataclass(frozen=True, slots=True)
class SplitRequest:
    """Everything the split decision reads about one task; the caller gathers it from the task
    spec, the handler's declared traits, the predictor and the agents' free slots.

    ``item_s`` and ``item_p90_s`` are the predictor's typical and p90 run time of one item;
    ``io_fraction`` is the measured share of wall time not on a CPU (1 - cpu/wall), None before
    anything was measured (the declared ``kind`` decides then)."""

    handler: str
    payload: bytes
    items_field: str
    kind: Literal["io", "cpu"]
    item_s: float
    free_slots: int
    item_p90_s: float = 0.0
    """0 = use ``item_s``."""
    io_fraction: float | None = None
    item_concurrency: int = 0
    """Items the handler runs at once inside one task (its declared trait); 0 = the config's."""
    max_items_per_part: int = 0
    """Most items the handler takes in one task (its declared limit; crawl reads at most 100
    URLs): a longer list is split into enough parts whatever the slots and costs say. 0 = none."""
    parent_timeout_s: float = 0.0
    """The parent's own start-to-close timeout: caps a part's (a part never gets longer than the
    whole was allowed), never divided among the parts. 0 = no cap."""
    policy: SplitPolicy = SplitPolicy.AUTO


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the decomposer concluded about a task before choosing a strategy."""

    items: int
    item_s: float
    item_p90_s: float
    io_bound: bool
    """Mostly waiting and an io handler: its items can overlap inside one task."""
    waits: bool
    """Mostly waiting, by measurement (or by the declared kind when unmeasured)."""
    wall_cpu_ratio: float | None
    """Wall time over CPU time, from io_fraction; inf for pure waiting; None when not measured."""
    concurrency: int
    """Items one task runs at once (1 for cpu-ish handlers)."""
    whole_s: float
    """Predicted run time of the task unsplit."""


@dataclass(frozen=True, slots=True)
class Part:
    """One subtask of a split task. ``index`` is its position in the plan (and in the merged
    result); ``items`` the indices of the parent's list it carries (empty for a pipeline stage
    that carries none); ``depends_on`` indices of parts that must succeed first."""

    index: int
    payload: bytes
    items: range
    depends_on: tuple[int, ...]
    timeout_s: float
    """Start-to-close of one attempt of this part, from predictions (0 = no prediction and no
    parent timeout: the scheduler's default)."""
    est_duration_s: float
    """Predicted run time (typical), for the balancer."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one task. ``parts`` is empty for :attr:`Strategy.NONE`."""

    handler: str
    strategy: Strategy
    parts: tuple[Part, ...]
    item_count: int
    reason: str
    """One sentence for the task's event detail."""
    items_field: str = ""
    custom: bool = False
    """The handler's own splitter made the parts."""
    analysis: Analysis | None = None

    @property
    def split(self) -> bool:
        return self.strategy is not Strategy.NONE


class SplitPart(Protocol):
    """What a handler's splitter returns per part (a plain ``bytes`` payload also counts as an
    independent part without items).

    Read with defaults, so a plugin's part type needs only ``payload``:

    - ``depends_on: Sequence[int]`` indices of earlier parts (default none); any makes a pipeline;
    - ``items: range | tuple[int, int]`` the parent's item indices the part carries;
    - ``est_duration_s: float`` the splitter's own estimate of the part's run time."""

    @property
    def payload(self) -> bytes: ...


class Splitter(Protocol):
    """A handler's own splitter, run by the controller only when the handler's package is
    installed in the controller's environment. Runs inside the scheduling core: it must be quick
    and pure (no I/O). Anything it raises fails the task with SPLIT_ERROR."""

    def __call__(self, payload: bytes, /) -> Sequence[SplitPart | bytes]: ...


class Merger(Protocol):
    """A handler's own merger: the parts' outputs in part order, None for a part that failed
    (only with partial results), to the parent's output bytes. Same rules as :class:`Splitter`."""

    def __call__(self, outputs: Sequence[bytes | None], /) -> bytes: ...


def split_error(handler: str, stage: str, problem: str, fix: str) -> TaskError:
    """A SPLIT_ERROR naming the handler and the stage (splitter or merger). Never retryable: the
    same payload or the same outputs would fail the same way."""
    return TaskError(
        ErrorKind.SPLIT_ERROR,
        f"handler {quote(handler)} {stage}: {problem}; {fix}",
        retryable=False,
        error_class=ErrorClass.FATAL,
    )
