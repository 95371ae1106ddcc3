"""GetTask, GetJob, the admin jobs view and GetStats' totals tell a result only once it is
journaled, as WatchJob does (tests/ha/test_results_journaled_first.py).

The leader reaches etcd through a proxy the test stalls (every byte held, no reset): the result
of a task that ends meanwhile reaches the leader's core, which counts it, but its journal
commit waits. Before the fix the reads returned it from the core at once, a result a failover
could lose and produce again differently; now they show the task RUNNING, without output, and
the job not done, until the commit goes through when the path flows again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, Task
from deerflow_protos import common_pb2

from ..tcp_proxy import Proxy

pytestmark = pytest.mark.timeout(120)

PLUGINS = Path(__file__).parents[1] / "multihost" / "plugins"


async def _until_the_leader_holds_the_result(client: AsyncClient) -> None:
    # The core took the result once the attempt is off the agent; nothing streams that: poll
    # the agent list (the agent's load, not a result), within a deadline.
    async with asyncio.timeout(30):
        while (await client.agents())[0].in_flight:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _shown(client: AsyncClient, job_id: str) -> dict[str, object]:
    """What every read tells of the job's one task "t" and of the job."""
    task = await client.get_task(job_id, "t")
    job = await client.get_job(job_id)
    detail = await client.job_detail(job_id)
    (listed,) = [j for j in (await client.list_jobs()).jobs if j.job_id == job_id]
    (t,) = detail.tasks
    stats = await client.stats()
    return {
        "GetStats": (
            stats.succeeded,
            stats.tasks_by_state.get("SUCCEEDED", 0),
            stats.tasks_by_state.get("IN_FLIGHT", 0),
            stats.jobs_active,
        ),
        "GetTask": (common_pb2.TaskState.Name(task.state), task.output, task.HasField("error")),
        "GetJob": (dict(job.by_state), job.done, job.finished_at > 0),
        "admin GetJob": (detail.job.state, t.state, t.HasField("error"), t.finished_at > 0),
        "admin GetJob events": [common_pb2.TaskState.Name(e.state) for e in t.events],
        "ListJobs": (listed.state, dict(listed.tasks_by_state)),
    }


async def test_reads_tell_a_result_only_once_the_journal_has_committed_it(
    etcd_server: LocalEtcd,
    etcd_proxy: Proxy,
    make_ha_cluster: Callable[..., HaCluster],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(PLUGINS))
    release = tmp_path / "release"
    cluster = make_ha_cluster(
        etcd_server.endpoint,
        controllers=0,
        agents=0,
        slots=1,
        agent_args=("--handler", "deerflow_netns_plugins:tagged_sleep"),
        # The stall lasts well under a second; the lease outlives it by far.
        controller_args=("--lease-ttl", "10"),
    )
    async with cluster:
        leader = await cluster.add_controller(["--etcd", etcd_proxy.address])
        await cluster.add_agent("a1")
        async with AsyncClient(leader.address, timeout_s=60) as client:
            await client.agents(wait_for=1)
            payload = json.dumps({"seconds": 0, "until": str(release)})
            job = await client.submit([Task("t", "tagged_sleep", payload)])
            before: dict[str, object] = {}
            told = b""
            async for event in client.events(job.job_id, timeout_s=60):
                if event.state == "RUNNING":
                    etcd_proxy.pause()  # the journal's commits wait from here
                    release.touch()
                    await _until_the_leader_holds_the_result(client)
                    before = await _shown(client, job.job_id)
                    etcd_proxy.resume()
                elif event.terminal:
                    assert event.state == "SUCCEEDED", event
                    told = event.output
            after = await _shown(client, job.job_id)
    assert before == {
        "GetStats": (0, 0, 1, 1),
        "GetTask": ("RUNNING", b"", False),
        "GetJob": ({"RUNNING": 1}, False, False),
        "admin GetJob": ("RUNNING", "RUNNING", False, False),
        "admin GetJob events": ["QUEUED", "DISPATCHED", "RUNNING"],
        "ListJobs": ("RUNNING", {"RUNNING": 1}),
    }
    assert told
    assert after == {
        "GetStats": (1, 1, 0, 0),
        "GetTask": ("SUCCEEDED", told, False),
        "GetJob": ({"SUCCEEDED": 1}, True, True),
        "admin GetJob": ("SUCCEEDED", "SUCCEEDED", False, True),
        "admin GetJob events": ["QUEUED", "DISPATCHED", "RUNNING", "SUCCEEDED"],
        "ListJobs": ("SUCCEEDED", {"SUCCEEDED": 1}),
    }
