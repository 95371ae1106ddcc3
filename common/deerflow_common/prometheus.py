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
    "MAX_HISTOGRAMS_PER_FAMILY",
    "MAX_SERIES_PER_FAMILY",
    "OTHER",
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

MAX_SERIES_PER_FAMILY = 200
"""Most series one family exposes: a label's values come from what clients and agents name
(handlers, rate keys, agents), so without a cap a flood of names makes every scrape huge (a
75 MB scrape took 11 s and stalled the controller's event loop, gRPC included, as long). Past
the cap, the series with the largest values are kept and the rest are summed into one whose
label values are all ``OTHER``."""

MAX_HISTOGRAMS_PER_FAMILY = 50
"""Most histograms (label values) one histogram family exposes, each 20-odd series."""

OTHER = "other"
"""The label value of the series that sums those past ``MAX_SERIES_PER_FAMILY``."""


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

    def __init__(self, max_series: int = MAX_SERIES_PER_FAMILY) -> None:
        self._families: list[Metric] = []
        self._process = False
        self.max_series = max_series
        self.max_histograms = min(max_series, MAX_HISTOGRAMS_PER_FAMILY)
        self.folded = 0
        """Series summed into ``OTHER`` ones in this scrape."""

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
        rows = [(dict(labels or {}), float(value)) for labels, value in samples]
        if len(rows) > self.max_series:
            rows = self._fold(rows)
        for labels, value in rows:
            metric.add_sample(sample_name, labels, value)
        self._families.append(metric)

    def _fold(self, rows: list[tuple[dict[str, str], float]]) -> list[tuple[dict[str, str], float]]:
        """The ``max_series - 1`` rows of largest value (in their order), and one more that sums
        the others, its label values all ``OTHER``."""
        keep = self.max_series - 1
        # Largest first; NaN (a gauge with no value yet) ranks last.
        ranked = sorted(
            range(len(rows)), key=lambda i: math.inf if math.isnan(rows[i][1]) else -rows[i][1]
        )
        kept = sorted(ranked[:keep])
        rest = ranked[keep:]
        other_labels = {k: OTHER for i in rest for k in rows[i][0]}
        total = math.fsum(rows[i][1] for i in rest)
        self.folded += len(rest)
        return [rows[i] for i in kept] + [(other_labels, total)]

    def histogram(
        self, name: str, help_text: str, label: str, children: Mapping[str, Histogram]
    ) -> None:
        """One histogram per value of ``label`` (e.g. per handler)."""
        family = HistogramMetricFamily(name, help_text, labels=[label])
        if len(children) > self.max_histograms:
            children = self._fold_histograms(children)
        for value, h in sorted(children.items()):
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, n in zip((*h.bounds, math.inf), h.counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            family.add_metric([value], buckets, h.sum)
        self._families.append(family)

    def _fold_histograms(self, children: Mapping[str, Histogram]) -> dict[str, Histogram]:
        """The ``max_histograms - 1`` histograms of most observations, and their sum for the
        rest under ``OTHER`` (children with other bounds are dropped from it)."""
        keep = self.max_histograms - 1
        ranked = sorted(children.items(), key=lambda kv: -kv[1].count)
        kept = dict(ranked[:keep])
        rest = [h for _, h in ranked[keep:]]
        other = Histogram(rest[0].bounds)
        for h in rest:
            if h.bounds == other.bounds:
                other.counts = [a + b for a, b in zip(other.counts, h.counts, strict=True)]
                other.sum += h.sum
                other.count += h.count
        kept[OTHER] = other
        self.folded += len(rest)
        return kept

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
