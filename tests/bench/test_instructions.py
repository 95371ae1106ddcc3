"""``deerflow bench instructions`` on real processes at a small size: the controller under
callgrind counts one job's instructions, not its start-up's; without valgrind the command says
what to install."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from deerflow_bench._cli import bench

needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
    reason="valgrind is not installed",
)


@needs_valgrind
def test_the_controllers_instructions_per_task_are_counted_for_the_job_alone() -> None:
    result = CliRunner().invoke(bench, ["instructions", "--tasks", "300", "--json"])

    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["workload"] == "instructions" and out["tasks"] == 300 and not out["traced"]
    # Hundreds of thousands an echo task (about 270,000 in December 2026). Start-up alone is
    # billions: counted with it, a task of 300 would read tens of millions.
    assert 20_000 < out["instructions_per_task"] < 5_000_000
    assert out["controller_instructions"] == pytest.approx(out["instructions_per_task"] * 300, 1e-3)


def test_without_valgrind_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")

    result = CliRunner().invoke(bench, ["instructions", "--tasks", "10"])

    assert result.exit_code == 2
    assert "install valgrind (Debian: apt install valgrind)" in result.output
    assert "Traceback" not in result.output
