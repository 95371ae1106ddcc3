"""Embedded mode's start-up (issue #19): the local agents are spawned before the controller
imports its server, wait on stdin for their command line, and join once it listens."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import psutil

from deerflow_bench._launcher import ControllerProcess
from deerflow_controller.client import AsyncClient, Task

PRESTART = [sys.executable, "-m", "deerflow_agent._prestart"]


async def test_two_local_agents_connect_and_run_work() -> None:
    controller = await ControllerProcess.start(["--local-agents", "2", "--agent-slots", "2"])
    try:
        children = psutil.Process(controller.pid).children()
        async with AsyncClient(controller.address, timeout_s=30) as client:
            agents = await client.agents(wait_for=2, timeout_s=30)
            ids = sorted(a.agent_id for a in agents)
            assert ids == [f"local-1-{controller.pid}", f"local-2-{controller.pid}"]
            job = await client.submit([Task(f"e{i}", "echo", f"{i}") for i in range(8)])
            results = await job.wait(timeout_s=30)
            assert all(r.ok for r in results.values())
            assert {r.agent_id for r in results.values()} <= set(ids)
        assert len(children) == 2
        # Each agent is the prestarted process, now running as deerflow-agent.
        assert all("deerflow_agent._prestart" in " ".join(c.cmdline()) for c in children)
    finally:
        await controller.stop()
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


async def test_a_prestarted_agent_whose_controller_never_listens_ends_quietly() -> None:
    proc = await asyncio.create_subprocess_exec(
        *PRESTART, stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(b""), 60)  # stdin closed: no hand-over

    assert proc.returncode == 0
    assert err == b""


async def test_a_prestarted_agent_runs_the_command_line_it_is_handed() -> None:
    hand_over = {"args": ["--controller", "not-an-address", "--id", "x"], "env": {}}
    proc = await asyncio.create_subprocess_exec(
        *PRESTART, stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(json.dumps(hand_over).encode() + b"\n"), 60)

    # deerflow-agent's own usage error, under its own name.
    assert proc.returncode == 2
    assert b"deerflow-agent" in err and b"is not host:port" in err
