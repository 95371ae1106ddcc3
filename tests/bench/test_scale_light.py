"""``deerflow bench scale --sections light_agents`` at a small size: real controller and light
agent processes (many real agent streams per process). The JSON's shape, every task succeeded,
every light agent connected through the job and at its end; no timing is asserted."""

from __future__ import annotations

import json

import psutil
import pytest
from click.testing import CliRunner

from deerflow_bench._cli import bench
from deerflow_bench._launcher import ControllerProcess
from deerflow_bench._light_agents import LightAgentsProcess
from deerflow_bench._scale_light import agent_shapes
from deerflow_controller.client import AsyncClient


def test_bench_scale_light_agents_runs_every_task_on_agents_that_all_stay_connected() -> None:
    result = CliRunner().invoke(
        bench,
        [
            "scale", "--sections", "light_agents", "--light-agents", "20", "--light-few", "2",
            "--light-slots", "2", "--light-tasks", "300", "--light-rounds", "1",
            "--light-idle", "0.2", "--json",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"workload", "machine", "light_agents"}
    light = out["light_agents"]
    assert (light["few"], light["many"], light["shape"]) == (2, 20, "same-agents")
    assert light["slots_per_agent"] == {"2": 2, "20": 2}
    assert light["slots_total"] == {"2": 4, "20": 40}
    assert [(r["round"], r["agents"]) for r in light["runs"]] == [(1, 2), (1, 20)]
    for run in light["runs"]:
        assert run["succeeded"] == 300 and run["failed"] == 0
        assert run["heartbeat_timeouts"] == 0
        assert run["agents_connected_at_end"] == run["agents"]
        assert run["light_processes"] == 2
        for phase in ("while_idle", "while_running"):
            watched = run[phase]
            assert watched["fewest_agents_listed"] in (None, run["agents"])
            assert set(watched) == {
                "polls", "get_stats_ms", "list_agents_ms", "fewest_agents_listed",
                "oldest_sign_of_life_s",
            }  # fmt: skip
        assert run["controller_cpu_s"] > 0 and run["tasks_per_s"] > 0
    assert light["every_task_succeeded"] and light["every_agent_connected_at_end"]
    assert set(light["median_tasks_per_s"]) == {"2", "20"}
    assert len(light["ratio_per_round"]) == 1
    assert light["target_ratio"] == 0.8
    assert light["meets_target"] == (light["ratio"] >= 0.8)
    assert light["meets_target_by_cpu"] == (light["cpu_ratio"] >= 0.8)


def test_agent_shapes_hold_the_agents_or_the_total_slots_equal() -> None:
    assert agent_shapes("same-agents", 200, 2, None) == {2: 64, 200: 64}
    assert agent_shapes("same-agents", 200, 2, 8) == {2: 8, 200: 8}
    assert agent_shapes("same-total", 200, 2, None) == {2: 400, 200: 4}
    assert agent_shapes("same-total", 20, 3, 2) == {3: 14, 20: 2}  # 40 slots, rounded up
    with pytest.raises(ValueError, match="same-agents or same-total"):
        agent_shapes("equal", 200, 2, None)


def test_bench_scale_refuses_fewer_many_agents_than_few() -> None:
    result = CliRunner().invoke(
        bench, ["scale", "--sections", "light_agents", "--light-agents", "4", "--light-few", "4"]
    )

    assert result.exit_code == 2
    assert "must be fewer than --light-agents (4), got 4" in result.output


async def test_light_agents_in_one_process_each_hold_their_own_connection() -> None:
    controller = await ControllerProcess.start()
    try:
        light = await LightAgentsProcess.start(controller.address, 5, id_prefix="own-")
        try:
            async with AsyncClient(controller.address, timeout_s=60) as client:
                listed = await client.agents(wait_for=5, timeout_s=60)
                port = int(controller.address.rpartition(":")[2])
                connections = [
                    c
                    for c in psutil.Process(light.pid).net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                ]
        finally:
            assert await light.stop() == 0  # SIGTERM drains every agent, then exits 0
    finally:
        await controller.stop()

    assert sorted(a.agent_id for a in listed) == [f"own-{i}" for i in range(1, 6)]
    assert len(connections) == 5
