"""``deerflow top --once`` renders the controller's numbers from its HTTP side."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from deerflow_controller.client import Task
from deerflow_controller.top import top

from .conftest import ClusterFactory, free_port


async def test_top_shows_throughput_latency_agents_and_errors(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(2, slots=4)
    async with await cluster.client() as client:
        tasks = [Task(f"e{i}", "echo", "x") for i in range(12)] + [Task("bad", "nope")]
        await (await client.submit(tasks)).wait(timeout_s=30)
    runner = CliRunner()
    # top runs its own event loop: give it a thread of its own.
    result = await asyncio.to_thread(
        runner.invoke, top, ["--http", cluster.http, "--once"], env={"COLUMNS": "140"}
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"controller {cluster.address}" in out
    assert "submitted 13" in out and "succeeded 12" in out and "failed 1" in out
    assert "agent-1" in out and "agent-2" in out
    assert "echo" in out
    assert "UNKNOWN_HANDLER" in out
    assert "suggestions" in out


async def test_top_says_what_to_check_when_the_controller_is_unreachable() -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, top, ["--http", f"http://127.0.0.1:{free_port()}", "--once"]
    )
    assert result.exit_code == 1
    assert "--http-port" in result.output
