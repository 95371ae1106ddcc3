"""`deerflow bench tracing` end to end at a small size: it runs, every traced task's two spans
(and the submit's) reach the receiver, and the report carries what docs/BENCHMARKS.md quotes.
No timing is asserted: the numbers come from the benchmark, on a quiet machine."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_tracing_benchmark_delivers_every_span_and_reports_json() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "deerflow_controller.cli",
            "bench",
            "tracing",
            "--tasks",
            "300",
            "--rounds",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["workload"] == "tracing_overhead"
    assert report["spans_per_traced_round"] == [report["expected_spans_per_traced_round"]] == [601]
    assert len(report["off_seconds"]) == len(report["on_seconds"]) == 1
    for key in ("slowdown", "paired_slowdown", "off_cpu_seconds", "on_cpu_seconds", "machine"):
        assert key in report
