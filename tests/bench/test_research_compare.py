"""``deerflow bench research --compare --json``, tiny: the three systems on a few jobs against the
real simulator, and every row of the table present for each."""

from __future__ import annotations

import json

from click.testing import CliRunner

from deerflow_bench._cli import bench
from deerflow_bench._research import CLAIMS, SYSTEMS
from deerflow_bench._research_workload import Oracle, WorkloadSpec, build_jobs


def test_the_workload_is_the_same_for_the_same_seed_and_repeats_questions() -> None:
    spec = WorkloadSpec(seed=3, duration_s=60, arrival_per_s=1.0)
    a, b = build_jobs(spec), build_jobs(spec)
    assert a == b
    assert len(a) > 30
    assert all(len(j.steps) >= 2 and all(2 <= len(s.turns) <= 3 for s in j.steps) for j in a)
    assert Oracle.of(a).hits > 0


def test_compare_prints_every_row_for_the_three_systems() -> None:
    result = CliRunner().invoke(
        bench,
        ["research", "--compare", "--json", "--duration", "1.5", "--arrival", "2",
         "--drain", "20", "--processes", "1", "--time-scale", "0.02", "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out["columns"]) == set(SYSTEMS)
    for name in CLAIMS:
        row = out["rows"][name]
        assert set(SYSTEMS) <= set(row)
        assert row["claim"]
        assert isinstance(row["beats_vs_fork"], bool)
        assert isinstance(row["beats_vs_deerflow2"], bool)
    assert "provider_429s" in out["rows"]
    assert isinstance(out["all_claims_beaten"], bool)
    for column in out["columns"].values():
        assert column["jobs_failed"] + column["jobs_degraded"] <= out["jobs"]
    ours = out["columns"]["ours"]
    # Busy time and the per-phase numbers come from the controller's log, read after the run.
    assert ours["busy_slot_s"] > 0
    phases = ours["stage_overheads"]
    assert phases["stages"] >= out["jobs"]
    assert phases["wall_mean_ms"] >= phases["critical_run_mean_ms"] > 0
    assert phases["to_running_mean_ms"] >= phases["throttled_mean_ms"] >= 0
    parts = ours["cpu_s_controller"] + ours["cpu_s_agents"] + ours["cpu_s_client"]
    assert abs(parts - ours["cpu_s"]) < 0.05
    assert ours["progress_priority"] is True
    assert 1 <= ours["peak_busy_slots"] <= ours["slots"]
    assert 0 < ours["job_critical_path_p50_s"] <= ours["job_completion_p50_s"]
