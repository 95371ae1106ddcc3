"""``deerflow bench scale``'s in-process sections at a small size: the JSON's shape and its
invariants (every task submitted runs once and succeeds, decisions add up, the partitioned run
uses every group). No timing is asserted."""

from __future__ import annotations

import json

from click.testing import CliRunner

from deerflow_bench._cli import bench
from deerflow_bench._scale_sim import partitioned, simulate


def test_the_simulation_queues_every_task_then_runs_each_once() -> None:
    out = simulate(agents=20, slots=3, tasks=1_050, job_size=100)

    assert out["jobs"] == 11
    assert out["queued_before_agents"] == 1_050
    assert out["succeeded"] == 1_050
    assert out["unfinished"] == 0
    assert out["submit"]["decisions"] == 1_050
    # Each task: accepted, assigned once, its result applied; plus each agent joining.
    assigned = out["join"]["decisions"] - 20 + out["drain"]["decisions"] - 1_050
    assert assigned == 1_050
    assert out["decisions"] == 3 * 1_050
    assert out["simulated_s"] == out["steps"] * out["task_s"]
    assert isinstance(out["bytes_per_queued_task"], int)


def test_partitioned_groups_each_run_their_own_jobs_to_the_end() -> None:
    out = partitioned(groups=3, agents=5, slots=2, tasks=400, job_size=40)

    groups = out["per_group"]
    assert [g["group"] for g in groups] == ["g0", "g1", "g2"]
    assert sum(g["jobs"] for g in groups) == out["jobs"] == 30
    assert sum(g["tasks"] for g in groups) == out["tasks"] == 1_200
    assert all(g["jobs"] > 0 and g["unfinished"] == 0 for g in groups)
    assert all(g["succeeded"] == g["tasks"] for g in groups)
    assert all(g["decisions"] == 3 * g["tasks"] for g in groups)
    assert out["decisions"] == 3 * 1_200
    assert out["decisions_per_simulated_s"] == round(out["decisions"] / out["simulated_s"], 1)


def test_bench_scale_prints_one_json_object_with_the_sections_asked_for() -> None:
    result = CliRunner().invoke(
        bench,
        [
            "scale", "--sections", "simulation,partitioned", "--sim-agents", "4",
            "--sim-tasks", "50", "--job-size", "10", "--groups", "1,2",
            "--group-agents", "2", "--group-tasks", "20", "--group-job-size", "5", "--json",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"workload", "machine", "simulation", "partitioned"}
    assert [p["groups"] for p in out["partitioned"]] == [1, 2]
    assert out["simulation"]["succeeded"] == 50


def test_bench_scale_refuses_an_unknown_section_in_one_sentence() -> None:
    result = CliRunner().invoke(bench, ["scale", "--sections", "simulation,warp"])

    assert result.exit_code == 2
    assert "sections are simulation, partitioned, queued, in_flight" in result.output
    assert "Traceback" not in result.output


async def test_in_flight_holds_every_task_on_real_agents_and_loses_none() -> None:
    from deerflow_bench._scale_inflight import in_flight

    out = await in_flight(2, 25, sleep_s=60, hold_s=1.0, job_size=20, poll_s=0.2)

    assert out["tasks"] == 50
    assert out["most_in_flight"] == 50
    assert out["all_assigned_s"] is not None
    assert out["fewest_agents_connected_while_held"] == 2
    assert out["retries_while_held"] == 0
    assert out["stats_latency_ms_while_held"]["samples"] >= 1
    assert out["controller_args"] == [
        "--max-queued-tasks", "50", "--max-queued-tasks-per-tenant", "50",
    ]  # fmt: skip


async def test_queued_holds_every_task_on_a_controller_without_agents() -> None:
    from deerflow_bench._scale_queued import queued

    out = await queued(300, 100)

    assert out["queued"] == 300
    assert out["jobs"] == 3
    assert "--max-queued-tasks" in out["controller_args"]
    assert isinstance(out["bytes_per_queued_task"], int)
