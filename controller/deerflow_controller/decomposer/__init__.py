"""The decomposer: whether and how to split a task with many items into parts, and how to merge
the parts' results back into one ordered result (issue #4; the README's Scheduling section).

Strategies: parallel chunks (cpu-ish), async batches (io-bound), pipeline stages (from a
handler's own splitter), or none. Formulas are in ``_plan``; the merged output format and the
fail-fast/partial rules in ``_merge``.
"""

from deerflow_controller.decomposer._decomposer import Decomposer
from deerflow_controller.decomposer._merge import (
    ItemError,
    MergeResult,
    PartCollector,
    PartOutcome,
    merge_parts,
)
from deerflow_controller.decomposer._model import (
    Analysis,
    DecomposerConfig,
    Merger,
    Part,
    Plan,
    SplitPart,
    SplitRequest,
    Splitter,
    Strategy,
    split_error,
)
from deerflow_controller.decomposer._plan import analyse, balanced_ranges, part_timeout

__all__ = [
    "Analysis",
    "Decomposer",
    "DecomposerConfig",
    "ItemError",
    "MergeResult",
    "Merger",
    "Part",
    "PartCollector",
    "PartOutcome",
    "Plan",
    "SplitPart",
    "SplitRequest",
    "Splitter",
    "Strategy",
    "analyse",
    "balanced_ranges",
    "merge_parts",
    "part_timeout",
    "split_error",
]
