"""Prometheus text exposition (format 0.0.4) and the one metric type that needs state here: a
histogram with fixed buckets.

Everything else both daemons expose is read from their live state when scraped, so the hot path
only pays for histogram observations (a bisect and two additions, well under a microsecond).
Kept dependency-free on purpose: ``prometheus_client``'s locks cost more per observation than
the rest of a no-op task's bookkeeping.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import psutil

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "Histogram",
    "Labels",
    "MetricsText",
    "process_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels | None, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in (labels or {}).items()]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class MetricsText:
    """Builds one exposition: each family once, with its HELP and TYPE lines."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def _family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def gauge(
        self, name: str, help_text: str, samples: Iterable[tuple[Labels | None, float]]
    ) -> None:
        self._samples(name, "gauge", help_text, samples)

    def counter(
        self, name: str, help_text: str, samples: Iterable[tuple[Labels | None, float]]
    ) -> None:
        """``name`` must end in ``_total``."""
        self._samples(name, "counter", help_text, samples)

    def _samples(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Labels | None, float]],
    ) -> None:
        self._family(name, kind, help_text)
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, help_text: str, label: str, children: Mapping[str, Histogram]
    ) -> None:
        """One histogram per value of ``label`` (e.g. per handler)."""
        self._family(name, "histogram", help_text)
        for value, h in sorted(children.items()):
            labels = {label: value}
            cumulative = 0
            for bound, n in zip((*h.bounds, math.inf), h.counts, strict=True):
                cumulative += n
                le = 'le="' + _number(bound) + '"'
                self._lines.append(f"{name}_bucket{_labels(labels, le)} {cumulative}")
            self._lines.append(f"{name}_sum{_labels(labels)} {_number(h.sum)}")
            self._lines.append(f"{name}_count{_labels(labels)} {h.count}")

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


_PROCESS: psutil.Process | None = None


def process_metrics(out: MetricsText) -> None:
    """The standard process_* series (resident memory, CPU seconds, start time, open fds)."""
    global _PROCESS
    if _PROCESS is None or _PROCESS.pid != os.getpid():
        _PROCESS = psutil.Process(os.getpid())
    proc = _PROCESS
    try:
        with proc.oneshot():
            rss = proc.memory_info().rss
            cpu = proc.cpu_times()
            started = proc.create_time()
            fds = proc.num_fds()
    except psutil.Error:
        return
    out.gauge("process_resident_memory_bytes", "Resident memory in bytes.", [(None, rss)])
    out.counter(
        "process_cpu_seconds_total", "User and system CPU seconds.", [(None, cpu.user + cpu.system)]
    )
    out.gauge("process_start_time_seconds", "Start time, Unix seconds.", [(None, started)])
    out.gauge("process_open_fds", "Open file descriptors.", [(None, fds)])
    out.gauge(
        "process_uptime_seconds",
        "Seconds since the process started.",
        [(None, time.time() - started)],
    )
