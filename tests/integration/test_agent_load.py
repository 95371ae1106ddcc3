"""Agents report their own processes' CPU apart from their machine's: an idle agent on a busy
machine is not a busy agent, while placement still reads the machine's headroom."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from deerflow_controller.client import AsyncClient, Task
from deerflow_protos import admin_pb2

from .conftest import ClusterFactory, connect

ONE_CORE_PERCENT = 100.0 / (os.cpu_count() or 1)
"""One core kept busy, as a share of the whole machine (50 on a 2-core machine)."""


@pytest.fixture
def busy_loop() -> Iterator[Callable[[], int]]:
    """Start processes that spin on one core each, outside any agent; each is killed by its pid
    at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        procs.append(proc)
        return proc.pid

    yield start
    for proc in procs:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def wait_for_agent(
    client: AsyncClient, test: Callable[[admin_pb2.AgentInfo], bool], timeout_s: float = 30.0
) -> admin_pb2.AgentInfo:
    """The first ListAgents answer whose only agent passes ``test`` (heartbeats come each
    second, so the condition is checked at that pace); fails with the last one seen."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    seen: list[admin_pb2.AgentInfo] = []
    while asyncio.get_running_loop().time() < deadline:
        (agent,) = await client.agents()
        seen.append(agent)
        if test(agent):
            return agent
        await asyncio.sleep(0.25)  # polling pace, not synchronisation: the loop waits on `test`
    last = seen[-1] if seen else None
    raise AssertionError(
        f"no heartbeat met the condition in {timeout_s:g} s; last: host "
        f"{last and last.cpu_percent:.0f} %, agent {last and last.process_cpu_percent:.0f} %"
    )


async def test_an_idle_agent_on_a_busy_machine_reports_its_own_cpu_near_zero(
    make_cluster: ClusterFactory, busy_loop: Callable[[], int]
) -> None:
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        try:
            busy_loop()
            # The machine shows the spinning process (most of a core); the idle agent does not.
            agent = await wait_for_agent(
                client,
                lambda a: (
                    a.cpu_percent >= 0.7 * ONE_CORE_PERCENT
                    and a.process_cpu_percent < 0.2 * ONE_CORE_PERCENT
                ),
            )
            assert agent.cpu_percent - agent.process_cpu_percent >= 0.5 * ONE_CORE_PERCENT
        finally:
            await client.close()


async def test_an_agent_running_a_cpu_task_counts_its_pool_workers_cpu_as_its_own(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        try:
            # About 4 s of SHA-256 on one idle core, in the agent's process pool (a child).
            job = await client.submit([Task("spin", "cpu", {"rounds": 4_000_000})])
            # A tolerant bound: on a machine shared with other work the worker may get a fraction
            # of a core; an idle agent reads about 0.5 % (the test above).
            agent = await wait_for_agent(
                client, lambda a: a.process_cpu_percent >= 0.2 * ONE_CORE_PERCENT
            )
            assert agent.process_cpu_percent <= agent.cpu_percent + 5.0  # part of the machine's
            await job.wait(timeout_s=60)  # a running cpu task cannot be stopped: let it end
        finally:
            await client.close()
