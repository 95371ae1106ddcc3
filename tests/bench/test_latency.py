"""``deerflow bench latency`` at a small size on real processes: the JSON's shape, every path
measured (the events stream, ``AsyncClient.run``, the blocking ``Client.run`` and the drop-ins'
``run_task``); no timing is asserted."""

from __future__ import annotations

import json

from click.testing import CliRunner

from deerflow_bench._cli import bench


def test_bench_latency_reports_every_path_at_idle_and_under_load() -> None:
    result = CliRunner().invoke(
        bench, ["latency", "--samples", "20", "--agents", "1", "--slots", "8", "--json"]
    )

    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["workload"] == "latency"
    for phase in ("idle", "loaded"):
        assert out[phase]["samples"] == 20
        for part in ("submit_to_start_ms", "start_to_result_ms", "round_trip_ms"):
            assert 0 < out[phase][part]["p50"] <= out[phase][part]["p99"]
    assert set(out["idle_paths"]) == {"client_run", "sync_client_run", "dropin_run_task"}
    for path in out["idle_paths"].values():
        assert path["samples"] == 20
        assert 0 < path["round_trip_ms"]["p50"] <= path["round_trip_ms"]["p99"]
    assert out["load_achieved_per_s"] > 0 and out["capacity_tasks_per_s"] > 0
