"""Results flow along dependencies across a leader failover (issue #15), with real controllers,
an agent and etcd: a dependent that only the next leader can dispatch still reads its
dependencies' outputs: a small one the new leader restores from the journal (the test waits
until it is journaled before killing the leader), and one too large to journal, whose producer
the new leader runs again (execution is at-least-once)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import Callable

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import EtcdClient, EventKind, Keys, LocalEtcd
from deerflow_controller.client import AsyncClient, Task
from deerflow_protos import common_pb2

pytestmark = pytest.mark.timeout(180)

HANDLERS = ("blob", "read_inputs")
AGENT_ARGS = tuple(a for h in HANDLERS for a in ("--handler", f"deerflow_bench.handlers:{h}"))
BIG = 2_000_000  # over the journal's record limit (1 MiB by default)


def pattern(seed: str, size: int) -> bytes:
    unit = f"{seed}|".encode()
    return (unit * (size // len(unit) + 1))[:size]


async def _journaled(etcd: EtcdClient, keys: Keys, job_id: str, task_id: str) -> None:
    """Return once ``task_id``'s terminal event of ``job_id`` is in the journal."""
    prefix = keys.journal_job_results_prefix(job_id)

    def has(value: bytes) -> bool:
        batch = common_pb2.TaskEventBatch()
        batch.ParseFromString(value)
        return any(ev.task_id == task_id for ev in batch.events)

    snapshot = await etcd.get_prefix(prefix)
    if any(has(kv.value) for kv in snapshot.kvs):
        return
    changes = etcd.watch_prefix(prefix, snapshot.revision + 1)
    async with contextlib.aclosing(changes):
        async for change in changes:
            if change.kind is EventKind.PUT and has(change.value):
                return


async def test_a_dependent_reads_its_inputs_after_a_leader_failover(
    etcd_server: LocalEtcd,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    cluster = make_ha_cluster(
        etcd_server.endpoint, controllers=2, agents=1, slots=4, agent_args=AGENT_ARGS
    )
    async with cluster, AsyncClient(cluster.addresses, timeout_s=60) as client:
        leader = await cluster.leader()
        await client.agents(wait_for=1)
        job = await client.submit(
            [
                Task("small", "blob", {"bytes": 1000, "seed": "S"}),
                Task("big", "blob", {"bytes": BIG, "seed": "B"}),
                # Still running when the leader dies (it is killed the moment small's result
                # is journaled), so only the next leader can dispatch the reader.
                Task("gate", "sleep", {"seconds": 5}, depends_on=["small", "big"]),
                Task(
                    "reader",
                    "read_inputs",
                    depends_on=["small", "big", "gate"],
                    inputs=["big", "small"],
                ),
            ]
        )
        got = {}
        async for result in job.results(timeout_s=120):
            got[result.task_id] = result
            if {"small", "big"} <= got.keys():
                break
        async with asyncio.timeout(30):
            await _journaled(etcd_client, keys, job.job_id, "small")
        leader.signal(signal.SIGKILL)
        await leader.wait(30)
        successor = await cluster.leader()
        assert successor is not leader
        results = await client.wait(job.job_id, timeout_s=150)
    report = results["reader"].json()
    assert report["order"] == ["small", "big"]
    assert report["sha256"]["small"] == hashlib.sha256(pattern("S", 1000)).hexdigest()
    assert report["sha256"]["big"] == hashlib.sha256(pattern("B", BIG)).hexdigest()
