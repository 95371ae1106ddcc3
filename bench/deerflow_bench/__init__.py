"""deerflow-parallel's benchmarks, its embedded demo, and the local-cluster tools its tests use:
a distribution of its own (``deerflow-parallel-bench``, the ``bench`` extra), kept out of the
product the way arq keeps its benchmarks outside its package.

``deerflow bench ...`` and ``deerflow demo`` are the commands below, which ``deerflow`` registers
when this package is installed. Every benchmark runs real controller, agent and simulator
processes on loopback (or, for ``cache`` and ``predictor``, the product's modules in this
process) and prints one JSON object.

Importing this package imports nothing else: each name below is loaded on first use, so the
``deerflow`` command line starts as fast without the benchmarks as with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The commands `deerflow` registers
    from ._cli import bench, demo

    # The demo
    from ._demo import DemoReport, research_dag, run_demo, summary_table

    # Local clusters (benchmarks, the demo, tests)
    from ._launcher import (
        READY_PREFIX,
        SIM_READY_PREFIX,
        Cluster,
        ControllerProcess,
        HaCluster,
        SimulatorProcess,
        wait_serving,
    )

    # A real OTLP/gRPC trace receiver (tests, the tracing benchmark)
    from ._otlp_receiver import OtlpReceiver, ReceivedSpan, parse_request

    # The predictor's accuracy harness (`deerflow bench predictor`, tests)
    from ._predictor_accuracy import (
        Record,
        holdout_records,
        load_records,
        prequential_records,
        synthetic_holdout,
        synthetic_run,
    )

    # Benchmarks callable from Python (each returns the JSON its command prints)
    from ._tracing_overhead import tracing_overhead

__all__ = [  # grouped by the import headers above; sorted as ruff wants
    "READY_PREFIX",
    "SIM_READY_PREFIX",
    "Cluster",
    "ControllerProcess",
    "DemoReport",
    "HaCluster",
    "OtlpReceiver",
    "ReceivedSpan",
    "Record",
    "SimulatorProcess",
    "bench",
    "demo",
    "holdout_records",
    "load_records",
    "parse_request",
    "prequential_records",
    "research_dag",
    "run_demo",
    "summary_table",
    "synthetic_holdout",
    "synthetic_run",
    "tracing_overhead",
    "wait_serving",
]

_LAZY = {
    **dict.fromkeys(("bench", "demo"), "_cli"),
    **dict.fromkeys(("DemoReport", "research_dag", "run_demo", "summary_table"), "_demo"),
    **dict.fromkeys(
        (
            "READY_PREFIX",
            "SIM_READY_PREFIX",
            "Cluster",
            "ControllerProcess",
            "HaCluster",
            "SimulatorProcess",
            "wait_serving",
        ),
        "_launcher",
    ),
    **dict.fromkeys(("OtlpReceiver", "ReceivedSpan", "parse_request"), "_otlp_receiver"),
    **dict.fromkeys(
        (
            "Record",
            "holdout_records",
            "load_records",
            "prequential_records",
            "synthetic_holdout",
            "synthetic_run",
        ),
        "_predictor_accuracy",
    ),
    "tracing_overhead": "_tracing_overhead",
}
"""Where each public name lives: loaded on first use (PEP 562)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
