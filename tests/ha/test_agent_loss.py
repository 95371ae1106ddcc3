"""Chaos test (a): SIGKILL an agent during a 2,000-task run on an etcd-backed cluster. Its
attempts run elsewhere, every task completes, and the job's event stream carries exactly one
terminal event per task (no result is delivered twice)."""

from __future__ import annotations

import collections
import signal
from collections.abc import Callable

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, Task

pytestmark = pytest.mark.timeout(180)


async def test_agent_sigkill_mid_run_completes_every_task_with_one_terminal_event_each(
    etcd_server: LocalEtcd, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    n = 2000
    async with make_ha_cluster(etcd_server.endpoint, controllers=2, agents=3, slots=16) as cluster:
        victim = cluster.agents[0]
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=3)
            ids = [f"t{i:04d}" for i in range(n)]
            job = await client.submit([Task(t, "sleep", {"seconds": 0.02}) for t in ids])
            terminal: collections.Counter[str] = collections.Counter()
            states = set()
            async for event in client.events(job.job_id, terminal_only=True, timeout_s=150):
                terminal[event.task_id] += 1
                states.add(event.state)
                if sum(terminal.values()) == 500:
                    victim.signal(signal.SIGKILL)
            agents = {a.agent_id for a in await client.agents()}
        assert victim.returncode is not None
        assert victim.name not in agents
        assert sorted(terminal) == ids
        assert set(terminal.values()) == {1}
        assert states == {"SUCCEEDED"}
