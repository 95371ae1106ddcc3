"""The journal against a real etcd: group commit, chunked results, load, forget, the end of a
term, and (through a real controller) the record limit and cleanup after delivery."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from deerflow_bench import HaCluster, wait_serving
from deerflow_common.etcd import EtcdClient, EventKind, Keys, LocalEtcd
from deerflow_controller.client import AsyncClient, PayloadTooLargeError, Task
from deerflow_controller.config import ControllerConfig, SchedulerConfig
from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.ha import Expiry, HaConfig, Journal, JournalClosed, load_journal
from deerflow_controller.ha.restore import restore_jobs
from deerflow_controller.service.server import Controller
from deerflow_protos import client_pb2, common_pb2

pytestmark = pytest.mark.timeout(120)


def job_record(job_id: str, n: int) -> bytes:
    request = client_pb2.SubmitJobRequest(job_id=job_id, name="j")
    for i in range(n):
        request.tasks.add(id=f"t{i}", handler="echo", payload=b"x")
    return request.SerializeToString()


def terminal(job_id: str, task_id: str, output: bytes = b"out") -> common_pb2.TaskEvent:
    return common_pb2.TaskEvent(
        job_id=job_id, task_id=task_id, state=common_pb2.SUCCEEDED, output=output, attempt=1
    )


@contextlib.asynccontextmanager
async def running(journal: Journal) -> AsyncIterator[Journal]:
    journal.start()
    try:
        yield journal
    finally:
        journal.close()
        await journal.wait_closed()


async def test_submits_queued_together_share_one_transaction(
    etcd_client: EtcdClient, keys: Keys
) -> None:
    async with running(Journal(etcd_client, keys, 7, max_record_bytes=1 << 20)) as journal:
        await asyncio.gather(
            *(journal.append_job(f"j{i}", job_record(f"j{i}", 3)) for i in range(50))
        )
        jobs, orphans = await load_journal(etcd_client, keys)
    assert sorted(j.request.job_id for j in jobs) == sorted(f"j{i}" for i in range(50))
    assert orphans == []
    assert journal.transactions < 50  # group commit: far fewer transactions than submits


async def test_results_are_chunked_under_the_record_limit_and_load_back(
    etcd_client: EtcdClient, keys: Keys
) -> None:
    async with running(Journal(etcd_client, keys, 7, max_record_bytes=4096)) as journal:
        await journal.append_job("j", job_record("j", 40))
        journal.add_results("j", [terminal("j", f"t{i}", b"o" * 300) for i in range(40)])
        # Records of one turn may span transactions; a later turn starts after they all committed.
        await journal.append_job("k", job_record("k", 1))
        await journal.append_job("m", job_record("m", 1))
        jobs, _ = await load_journal(etcd_client, keys)
        chunks = await etcd_client.get_prefix(keys.journal_job_results_prefix("j"))
    assert len(chunks.kvs) > 1
    assert all(len(kv.value) <= 4096 for kv in chunks.kvs)
    (job,) = [j for j in jobs if j.request.job_id == "j"]
    assert sorted(job.results) == sorted(f"t{i}" for i in range(40))
    assert job.results["t3"].output == b"o" * 300


async def test_forget_deletes_the_job_and_its_results(etcd_client: EtcdClient, keys: Keys) -> None:
    async with running(Journal(etcd_client, keys, 7, max_record_bytes=1 << 20)) as journal:
        await journal.append_job("j", job_record("j", 2))
        journal.add_results("j", [terminal("j", "t0")])
        await journal.append_job("k", job_record("k", 1))
        journal.forget("j")
        await journal.append_job("m", job_record("m", 1))  # the forget went in this turn or before
        jobs, _ = await load_journal(etcd_client, keys)
        leftovers = await etcd_client.get_prefix(keys.journal_job_results_prefix("j"))
    assert sorted(j.request.job_id for j in jobs) == ["k", "m"]
    assert leftovers.kvs == ()


async def test_a_submit_waiting_when_the_term_ends_is_refused(
    restartable_etcd: LocalEtcd, keys: Keys
) -> None:
    client = EtcdClient(restartable_etcd.endpoint, timeout_s=0.5)
    await client.connect()
    try:
        journal = Journal(client, keys, 7, max_record_bytes=1 << 20)
        journal.start()
        await asyncio.to_thread(restartable_etcd.stop)  # the write cannot commit now
        waiting = asyncio.ensure_future(journal.append_job("j", job_record("j", 1)))
        await asyncio.sleep(0)  # let the submit queue its record
        journal.close()  # the term ends (the session's loss does this)
        with pytest.raises(JournalClosed):
            await waiting
        await journal.wait_closed()
    finally:
        await client.close()


async def test_a_job_too_large_to_journal_is_refused_with_an_actionable_message(
    etcd_server: LocalEtcd, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    async with (
        make_ha_cluster(
            etcd_server.endpoint,
            controllers=1,
            agents=0,
            controller_args=("--journal-max-payload-bytes", "4096"),
        ) as cluster,
        AsyncClient(cluster.addresses, timeout_s=30) as client,
    ):
        with pytest.raises(PayloadTooLargeError) as refused:
            await client.submit([Task(f"t{i}", "echo", "y" * 500) for i in range(20)])
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--journal-max-payload-bytes" in refused.value.message
        job = await client.submit([Task("small", "echo", "y")])
        assert job.accepted == 1


async def test_journal_entries_go_once_the_results_are_delivered(
    etcd_server: LocalEtcd,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    cluster = make_ha_cluster(etcd_server.endpoint, controllers=1, agents=1)
    async with cluster, AsyncClient(cluster.addresses, timeout_s=30) as client:
        await client.agents(wait_for=1)
        job = await client.submit([Task(f"t{i}", "echo", "z") for i in range(20)])
        record = await etcd_client.get(keys.journal_job(job.job_id))
        assert record is not None  # journaled before the submit was acknowledged
        results = await job.wait(timeout_s=30)
        assert len(results) == 20
        async with asyncio.timeout(30):
            watch = etcd_client.watch_key(keys.journal_job(job.job_id), record.mod_revision + 1)
            async with contextlib.aclosing(watch):
                async for change in watch:
                    if change.kind is EventKind.DELETE:
                        break
        left = await etcd_client.get_prefix(keys.journal_prefix)
        assert left.kvs == ()


async def test_a_deposed_leader_cannot_write_to_the_journal(
    etcd_client: EtcdClient, keys: Keys
) -> None:
    leader_key = keys.election_candidate(0xABC)
    created, kv = await etcd_client.put_if_absent(leader_key, b"me")
    assert created
    fenced: list[bool] = []
    journal = Journal(
        etcd_client,
        keys,
        kv.create_revision,
        max_record_bytes=1 << 20,
        leader_key=leader_key,
        on_fenced=lambda: fenced.append(True),
    )
    async with running(journal):
        await journal.append_job("before", job_record("before", 1))
        await etcd_client.delete(leader_key)  # another controller took over meanwhile
        with pytest.raises(JournalClosed):
            await journal.append_job("after", job_record("after", 1))
        jobs, _ = await load_journal(etcd_client, keys)
    assert [j.request.job_id for j in jobs] == ["before"]
    assert fenced == [True]


async def test_a_takeover_deletes_finished_jobs_past_their_expiry_and_reruns_no_delivered_task(
    etcd_client: EtcdClient, keys: Keys
) -> None:
    now = time.time()
    # The old leader's clock runs behind, so none of its expiry timers fires before it ends:
    # as a leader that died before them.
    lagging = Journal(etcd_client, keys, 7, max_record_bytes=1 << 20, clock=lambda: now - 100)
    async with running(lagging) as old_leader:
        for job_id in ("expired", "kept", "delivered-partial", "finished-partial", "live"):
            await old_leader.append_job(job_id, job_record(job_id, 2))
        for job_id in ("expired", "kept"):
            old_leader.add_results(job_id, [terminal(job_id, "t0"), terminal(job_id, "t1")])
        for job_id in ("delivered-partial", "finished-partial", "live"):
            old_leader.add_results(job_id, [terminal(job_id, "t0")])  # t1's was too large
        old_leader.expire_at("expired", Expiry(now - 1, delivered=True))
        old_leader.expire_at("kept", Expiry(now + 60, delivered=True))
        old_leader.expire_at("delivered-partial", Expiry(now + 60, delivered=True))
        old_leader.expire_at("finished-partial", Expiry(now + 600))
        await old_leader.append_job("sync", job_record("sync", 1))  # the records above are in
    jobs, orphans = await load_journal(etcd_client, keys)
    sched = Scheduler(SchedulerConfig())

    restored = restore_jobs(sched, jobs, now)

    assert restored.expired == ["expired"]
    # Deleted at their expiry (seconds from now), not restarted:
    assert {job_id: (round(e.at - now), e.delivered) for job_id, e in restored.kept.items()} == {
        "kept": (60, True),
        "delivered-partial": (60, True),
        "finished-partial": (600, False),
    }
    assert sorted(sched.jobs) == ["finished-partial", "kept", "live", "sync"]
    assert sched.jobs["kept"].done
    # Held for the reconnect grace, then run: the tasks without a result of the jobs no client
    # has received in full; none of a delivered job.
    unfinished = {
        (job_id, task.id)
        for job_id, job in sched.jobs.items()
        for task in job.tasks.values()
        if not task.terminal
    }
    assert unfinished == {("finished-partial", "t1"), ("live", "t1"), ("sync", "t0")}
    assert sched.restored_waiting() == 3
    assert (restored.jobs, restored.tasks, restored.finished) == (4, 7, 4)
    assert orphans == []


async def test_a_delivered_jobs_entries_go_at_their_expiry_though_its_leader_died_before(
    etcd_server: LocalEtcd,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    cluster = make_ha_cluster(etcd_server.endpoint, controllers=2, agents=1)
    async with cluster, AsyncClient(cluster.addresses, timeout_s=30) as client:
        leader = await cluster.leader()
        await client.agents(wait_for=1)
        job = await client.submit([Task(f"t{i}", "echo", "z") for i in range(20)])
        assert len(await job.wait(timeout_s=30)) == 20
        expiry_key = keys.journal_expiry(job.job_id)
        async with asyncio.timeout(10):
            # The delivery shortened the job's expiry to a few seconds; once that is journaled,
            # the leader dies before its own timer deletes the entries.
            snapshot = await etcd_client.get_prefix(expiry_key)
            changes = etcd_client.watch_key(expiry_key, snapshot.revision + 1)
            async with contextlib.aclosing(changes):
                values = [kv.value for kv in snapshot.kvs]
                while not values or not Expiry.parse(values[-1]).delivered:
                    change = await anext(changes)
                    if change.kind is EventKind.PUT:
                        values.append(change.value)
        leader.signal(signal.SIGKILL)
        record = await etcd_client.get(keys.journal_job(job.job_id))
        assert record is not None
        async with asyncio.timeout(20):  # the successor keeps the expiry: a few seconds
            watch = etcd_client.watch_key(keys.journal_job(job.job_id), record.mod_revision + 1)
            async with contextlib.aclosing(watch):
                async for change in watch:
                    if change.kind is EventKind.DELETE:
                        break
        left = await etcd_client.get_prefix(keys.journal_prefix)
        assert left.kvs == ()
        assert await cluster.leader() is not leader


async def test_a_takeover_counts_no_restored_result_as_a_task_finished_again(
    etcd_server: LocalEtcd, etcd_client: EtcdClient, keys: Keys
) -> None:
    now = time.time()
    lagging = Journal(etcd_client, keys, 7, max_record_bytes=1 << 20, clock=lambda: now - 100)
    async with running(lagging) as old_leader:
        await old_leader.append_job("done", job_record("done", 3))
        old_leader.add_results("done", [terminal("done", f"t{i}") for i in range(3)])
        old_leader.expire_at("done", Expiry(now + 60, delivered=True))
        await old_leader.append_job("sync", job_record("sync", 1))  # the records above are in
    controller = Controller(
        ControllerConfig(port=0), HaConfig(endpoints=(etcd_server.endpoint,), prefix=keys.prefix)
    )
    metrics = controller.observability.enable_metrics()
    await controller.start()
    try:
        async with asyncio.timeout(30):
            await wait_serving(controller.address)
        controller.shell.flush()  # the metrics tap has read every event there is
        assert controller.shell.scheduler.jobs["done"].done
        echo = metrics.handlers.get("echo")
        # The three ran under the old leader: counted there, not again by each new one.
        assert echo is None or echo.finished == {}
    finally:
        await controller.stop()


async def test_a_journaled_job_keeps_its_deadline_and_when_it_was_accepted(
    etcd_server: LocalEtcd,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
) -> None:
    cluster = make_ha_cluster(etcd_server.endpoint, controllers=1, agents=0)
    async with cluster, AsyncClient(cluster.addresses, timeout_s=30) as client:
        before = time.time()
        job = await client.submit(
            [Task("t", "echo", "z", schedule_to_close_s=30.0)], deadline_s=600.0
        )
        after = time.time()
        record = await etcd_client.get(keys.journal_job(job.job_id))
    assert record is not None
    request = client_pb2.SubmitJobRequest.FromString(record.value)
    assert request.deadline_s == 600.0
    assert before <= request.accepted_at <= after  # a new leader counts the deadline from here
    assert request.tasks[0].schedule_to_close_s == 30.0
