"""/metrics stays small whatever names clients and agents use (issue #17, finding 5): a family
exposes at most MAX_SERIES_PER_FAMILY series (histograms: MAX_HISTOGRAMS_PER_FAMILY label
values), the rest summed into one labelled ``other``; the per-handler metrics the controller
keeps are capped the same way, so their memory is bounded too."""

from __future__ import annotations

from deerflow_common.prometheus import (
    MAX_HISTOGRAMS_PER_FAMILY,
    MAX_SERIES_PER_FAMILY,
    OTHER,
    Histogram,
    MetricsText,
)
from deerflow_controller.observability.metrics import TaskMetrics


def sample_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


def test_a_family_of_many_label_values_keeps_the_largest_and_sums_the_rest_into_other() -> None:
    out = MetricsText()
    out.gauge(
        "deerflow_ratelimit_waiting",
        "Tasks waiting.",
        [({"key": f"user-{i}"}, float(i)) for i in range(100_000)],
    )
    text = out.render()
    lines = sample_lines(text, "deerflow_ratelimit_waiting{")
    assert len(lines) == MAX_SERIES_PER_FAMILY
    assert 'deerflow_ratelimit_waiting{key="user-99999"} 99999.0' in lines  # the largest stay
    folded = sum(range(100_000 - MAX_SERIES_PER_FAMILY + 1))
    other = [line for line in lines if f'key="{OTHER}"' in line]
    assert len(other) == 1 and float(other[0].rsplit(" ", 1)[1]) == folded
    assert len(text) < 20_000  # was about 4 MB for this one family


def test_histograms_of_many_handlers_fold_into_one_other_histogram() -> None:
    children = {}
    for i in range(5_000):
        h = Histogram()
        for _ in range(i % 7 + 1):
            h.observe(0.01)
        children[f"handler-{i}"] = h
    out = MetricsText()
    out.histogram("deerflow_task_run_seconds", "Run time.", "handler", children)
    text = out.render()
    counts = sample_lines(text, "deerflow_task_run_seconds_count{")
    assert len(counts) == MAX_HISTOGRAMS_PER_FAMILY
    total = sum(h.count for h in children.values())
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counts) == total  # nothing lost
    assert len(text) < 150_000  # was about 9 MB


def test_the_controller_keeps_metrics_for_a_bounded_number_of_handlers() -> None:
    metrics = TaskMetrics()
    for i in range(10_000):
        metrics.handler(f"nobody-{i}")
    assert len(metrics.handlers) == MAX_SERIES_PER_FAMILY  # 199 named, and other
    assert metrics.handler("nobody-9999") is metrics.handlers[OTHER]
    assert metrics.handler("nobody-0") is not metrics.handlers[OTHER]  # the first ones stay
