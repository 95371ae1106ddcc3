"""What the fuzz suite adds to a pytest run, installed by ``tests/conftest.py`` (which the xdist
controller process loads too; it never loads ``tests/fuzz/conftest.py``):

- the count of fuzzed inputs, summed over the session and reported at the end of the run (a
  "fuzz inputs" section) and in the pytest cache (``deerflow/fuzz-inputs``); each fuzz test
  records its count as a user property;
- under xdist's default ``--dist load``, the tests of each fuzz module go to one worker, so the
  module's controller starts once, not once per worker (``--dist loadgroup`` would say so with
  a mark, but it does not group on pytest 9.2: pytest-dev/pytest-xdist#1386). Every other test
  is spread one by one, as with ``load``."""

from __future__ import annotations

from typing import Any

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


FUZZ_DIR = "tests/fuzz/"


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown when xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FuzzModulesTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(FUZZ_DIR):
                return nodeid.split("::", 1)[0]
            return nodeid

    return FuzzModulesTogether(config, log)
