"""``--config FILE`` on real daemons: a controller started with a config file runs with its values
(read back through the admin API), the command line still wins over it, and an agent finds its
file through ``DEERFLOW_CONFIG``."""

from __future__ import annotations

from pathlib import Path

import pytest

from deerflow_bench import ControllerProcess
from deerflow_controller.client import AsyncClient, Task

from .conftest import ClusterFactory, connect


async def test_daemons_started_with_config_files_run_with_their_values(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    controller_toml = tmp_path / "controller.toml"
    # port = 1 would need root: the launcher's --port 0 must win over it for the start to work.
    controller_toml.write_text('tuner-objective = "latency"\ntuner-interval-s = 7.5\nport = 1\n')
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text('label = ["zone=from-file"]\n')
    async with make_cluster(
        1,
        controller_args=("--config", str(controller_toml)),
        agent_env={"DEERFLOW_CONFIG": str(agent_toml)},
    ) as cluster:
        client = await connect(cluster)
        try:
            stats = await client.stats()
            assert stats.tuning.objective == "latency"
            assert stats.tuning.interval_s == 7.5
            # Only an agent carrying the file's label can run this task.
            job = await client.submit([Task("t", "echo", b"hi", labels={"zone": "from-file"})])
            results = await job.wait(timeout_s=30)
            assert results["t"].output == b"hi"
        finally:
            await client.close()


async def test_a_controllers_config_file_from_the_environment_is_not_handed_to_its_local_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEERFLOW_CONFIG names the controller's file; the agents it starts (--local-agents)
    inherit its environment but not that file, whose controller keys they would refuse."""
    controller_toml = tmp_path / "controller.toml"
    controller_toml.write_text('tuner-objective = "latency"\nlocal-agents = 1\n')
    monkeypatch.setenv("DEERFLOW_CONFIG", str(controller_toml))
    controller = await ControllerProcess.start()
    try:
        async with AsyncClient(controller.address, timeout_s=30) as client:
            assert (await client.stats()).tuning.objective == "latency"
            assert len(await client.agents(wait_for=1, timeout_s=20)) == 1
            job = await client.submit([Task("t", "echo", b"hi")])
            assert (await job.wait(timeout_s=30))["t"].output == b"hi"
    finally:
        await controller.stop()
