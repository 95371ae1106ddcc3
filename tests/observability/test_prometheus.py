"""The exposition format and histogram arithmetic shared by both daemons."""

from __future__ import annotations

import math

from deerflow_common.prometheus import Histogram, MetricsText

from .conftest import parse_metrics, sample


def test_histograms_render_cumulative_buckets_sum_and_count() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    out = MetricsText()
    out.histogram("x_seconds", "help", "handler", {"echo": h})
    m = parse_metrics(out.render())
    assert sample(m, "x_seconds_bucket", handler="echo", le="0.1") == 2
    assert sample(m, "x_seconds_bucket", handler="echo", le="1") == 3
    assert sample(m, "x_seconds_bucket", handler="echo", le="+Inf") == 4
    assert sample(m, "x_seconds_count", handler="echo") == 4
    assert sample(m, "x_seconds_sum", handler="echo") == 3.65


def test_label_values_are_escaped() -> None:
    out = MetricsText()
    out.gauge("g", "help", [({"key": 'a"b\\c\nd'}, 1.5)])
    text = out.render()
    assert 'g{key="a\\"b\\\\c\\nd"} 1.5' in text
    assert "# TYPE g gauge" in text


def test_quantiles_interpolate_inside_the_bucket() -> None:
    h = Histogram((1.0, 2.0))
    assert math.isnan(h.quantile(0.5))
    for v in (0.5, 1.5, 1.5, 1.5):
        h.observe(v)
    assert h.quantile(0.25) == 1.0
    assert h.quantile(1.0) == 2.0
