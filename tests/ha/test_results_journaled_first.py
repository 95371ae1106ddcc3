"""A leader tells a client a result only once it is journaled.

The leader reaches etcd through a proxy the test cuts; its agents and the client still reach
it. Results that arrive in its last lease window cannot be journaled: before the fence, it told
them to the client, and its successor, which never saw them, ran those tasks again and held
other results (the client had been told one result, the cluster kept another). Now the client is
told only what the successor holds. tests/multihost does the same across network namespaces."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from deerflow_bench import HaCluster, wait_serving
from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, Task

from ..tcp_proxy import Proxy

pytestmark = pytest.mark.timeout(180)

PLUGINS = Path(__file__).parents[1] / "multihost" / "plugins"


@pytest.mark.parametrize("watch", ["", "events"])
async def test_results_a_leader_cut_off_from_etcd_could_not_journal_are_never_told(
    watch: str,
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
        slots=4,
        agent_args=("--handler", "deerflow_netns_plugins:tagged_sleep"),
        controller_args=("--lease-ttl", "2"),
    )
    async with cluster:
        old = await cluster.add_controller(["--etcd", etcd_proxy.address])
        assert await cluster.leader() is old
        await cluster.add_controller()
        for agent_id in ("a1", "a2"):
            await cluster.add_agent(agent_id)
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=2)
            ids = [f"t{i}" for i in range(8)]
            payload = json.dumps({"seconds": 0.05, "until": str(release)})
            tasks = [Task(t, "tagged_sleep", payload) for t in ids]
            told: dict[str, set[bytes]] = collections.defaultdict(set)
            running = 0
            if watch:  # the stream opened together with the submit (bounded by the mark)
                job = await client.submit(tasks, watch="events")
                events = job.events()
            else:
                job = await client.submit(tasks)
                events = client.events(job.job_id, timeout_s=120)
            async for event in events:
                if event.state == "RUNNING":
                    running += 1
                    if running == len(ids):
                        await etcd_proxy.cut()  # the leader loses etcd, not its agents
                        release.touch()  # their results reach it within its lease
                elif event.terminal:
                    assert event.state == "SUCCEEDED", event
                    told[event.task_id].add(event.output)
            # The cut-off leader stands down within its lease; read what its successor holds.
            async with asyncio.timeout(30):
                await wait_serving(old.address, serving=False)
            new = await cluster.leader()
            assert new is not old
            held = {
                e.task_id: e.output
                async for e in client.events(job.job_id, terminal_only=True, timeout_s=60)
            }
    assert sorted(held) == ids
    assert {t: outputs for t, outputs in told.items()} == {t: {o} for t, o in held.items()}
