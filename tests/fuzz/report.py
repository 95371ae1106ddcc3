"""The count of fuzzed inputs, summed over the session and reported at the end of the run (a
"fuzz inputs" section) and in the pytest cache (``deerflow/fuzz-inputs``). Each fuzz test
records its count as a user property; these hooks are installed by ``tests/conftest.py``, which
the xdist controller process loads too (it never loads ``tests/fuzz/conftest.py``)."""

from __future__ import annotations

import pytest

INPUTS_PROPERTY = "fuzz_inputs"

_totals: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    for name, value in report.user_properties:
        if name == INPUTS_PROPERTY and isinstance(value, int):
            _totals[report.nodeid] = value


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _totals:
        return
    total = sum(_totals.values())
    terminalreporter.section("fuzz inputs")
    for nodeid, n in sorted(_totals.items()):
        terminalreporter.write_line(f"{n:7d}  {nodeid}")
    terminalreporter.write_line(f"{total:7d}  inputs in all, each against a live controller")
    cache = getattr(terminalreporter.config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        cache.set("deerflow/fuzz-inputs", {"total": total, "by_test": dict(_totals)})
