"""Prometheus metrics of both daemons: ``prometheus_client`` writes the exposition; the one
piece of state kept here is a histogram with fixed buckets.

Everything the daemons expose is read from their live state when scraped (the collector
pattern), so the hot path only pays for histogram observations. Those stay ours: an
observation here is a bisect and two additions (0.66 us measured on the 2-core machine),
against 1.9 us for ``prometheus_client.Histogram.observe`` (its lock), and a no-op task's
whole bookkeeping is a few microseconds. At scrape time they become
``HistogramMetricFamily`` samples; the text format, escaping and the standard ``process_*``
series are the library's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import HistogramMetricFamily, Metric

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "Histogram",
    "Labels",
    "MetricsText",
    "process_metrics",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text format every Prometheus version reads (what ``generate_latest`` writes for names
that need no escaping, as ours)."""

DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
"""Seconds, from sub-millisecond no-op tasks to 30-minute research sub-agents."""

Labels = Mapping[str, str]


class Histogram:
    """Counts of observations per bucket (not cumulative until rendered), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """An estimate by linear interpolation inside the bucket (as PromQL's
        histogram_quantile does); NaN without observations."""
        if not self.count:
            return math.nan
        rank = q * self.count
        seen = 0
        lower = 0.0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            if seen + n >= rank and n:
                if bound == math.inf:
                    return lower
                return lower + (bound - lower) * (rank - seen) / n
            seen += n
            lower = bound
        return lower


class MetricsText:
    """One scrape's metric families, rendered by ``prometheus_client``. Each family is added
    once, with all its samples (label sets may differ between samples)."""

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self._process = False

    def gauge(
        self, name: str, help_text: str, samples: Iterable[tuple[Labels | None, float]]
    ) -> None:
        self._add(Metric(name, help_text, "gauge"), name, samples)

    def counter(
        self, name: str, help_text: str, samples: Iterable[tuple[Labels | None, float]]
    ) -> None:
        """``name`` must end in ``_total`` (the family is named without it, as the library
        and OpenMetrics do)."""
        family = name[: -len("_total")] if name.endswith("_total") else name
        self._add(Metric(family, help_text, "counter"), name, samples)

    def _add(
        self, metric: Metric, sample_name: str, samples: Iterable[tuple[Labels | None, float]]
    ) -> None:
        for labels, value in samples:
            metric.add_sample(sample_name, dict(labels or {}), float(value))
        self._families.append(metric)

    def histogram(
        self, name: str, help_text: str, label: str, children: Mapping[str, Histogram]
    ) -> None:
        """One histogram per value of ``label`` (e.g. per handler)."""
        family = HistogramMetricFamily(name, help_text, labels=[label])
        for value, h in sorted(children.items()):
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, n in zip((*h.bounds, math.inf), h.counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            family.add_metric([value], buckets, h.sum)
        self._families.append(family)

    def add_process(self) -> None:
        """Include the standard ``process_*`` series (``prometheus_client.ProcessCollector``:
        CPU seconds, resident and virtual memory, start time, open and max fds; Linux)."""
        self._process = True

    def collect(self) -> Iterator[Metric]:
        yield from self._families

    def render(self) -> str:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        if self._process:
            ProcessCollector(registry=registry)
        return generate_latest(registry).decode()


def _le(bound: float) -> str:
    if bound == math.inf:
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def process_metrics(out: MetricsText) -> None:
    """Add the standard process_* series to ``out`` (see :meth:`MetricsText.add_process`)."""
    out.add_process()
