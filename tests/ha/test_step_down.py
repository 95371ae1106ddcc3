"""A leader that steps down ends each open WatchJob once, with UNAVAILABLE and the new leader's
address in ``deerflow-leader`` (as a standby's refusal), and logs no error. The leader runs in
this process (so its log is read), on a real etcd, with a real standby controller process that
takes over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from deerflow_bench import ControllerProcess, HaCluster, wait_serving
from deerflow_common.etcd import EtcdClient, EventKind, Keys, LocalEtcd
from deerflow_controller.config import ControllerConfig
from deerflow_controller.ha import LEADER_METADATA, HaConfig
from deerflow_controller.service.server import Controller
from deerflow_protos import client_pb2, client_pb2_grpc

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def leader(etcd_server: LocalEtcd, keys: Keys) -> AsyncIterator[Controller]:
    """An in-process controller that leads (the first to campaign under this test's prefix)."""
    controller = Controller(
        ControllerConfig(port=0), HaConfig(endpoints=(etcd_server.endpoint,), prefix=keys.prefix)
    )
    await controller.start()
    try:
        async with asyncio.timeout(30):
            await wait_serving(controller.address)
        yield controller
    finally:
        await controller.stop()


@pytest.fixture
async def channel(leader: Controller) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(leader.address) as channel:
        yield channel


async def open_watches(channel: grpc.aio.Channel, n: int) -> list[grpc.aio.UnaryStreamCall]:
    """``n`` watches of one job with no agent (its task waits), each past its first message."""
    stub = client_pb2_grpc.JobServiceStub(channel)
    request = client_pb2.SubmitJobRequest(job_id="watched")
    request.tasks.add(id="a", handler="echo", payload=b"x")
    await stub.SubmitJob(request)
    calls = [stub.WatchJob(client_pb2.WatchJobRequest(job_id="watched")) for _ in range(n)]
    for call in calls:
        await call.read()
    return calls


async def standby_in_line(cluster: HaCluster, etcd: EtcdClient, keys: Keys) -> ControllerProcess:
    """A standby controller, once its candidate key waits behind the leader's (so it, not the
    stepping-down leader campaigning again, is next). Watched from a range read, no polling."""
    standby = await cluster.add_controller()
    async with asyncio.timeout(30):
        snapshot = await etcd.get_prefix(keys.election_prefix)
        candidates = len(snapshot.kvs)
        if candidates < 2:
            watch = etcd.watch_prefix(keys.election_prefix, snapshot.revision + 1)
            async with contextlib.aclosing(watch) as changes:
                async for change in changes:
                    candidates += 1 if change.kind is EventKind.PUT else -1
                    if candidates >= 2:
                        break
    return standby


async def ended_status(call: grpc.aio.UnaryStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(30):
            while await call.read() is not grpc.aio.EOF:
                pass
    return caught.value


def assert_ended_once_naming(
    statuses: list[grpc.aio.AioRpcError], successor: ControllerProcess
) -> None:
    for status in statuses:
        assert status.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(status.trailing_metadata() or ()).get(LEADER_METADATA) == successor.address
        assert f"the leader is now {successor.address}" in (status.details() or "")


def errors_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_leader_whose_key_is_gone_ends_each_watch_once_naming_the_new_leader(
    leader: Controller,
    channel: grpc.aio.Channel,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
    etcd_server: LocalEtcd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    standby = await standby_in_line(make_ha_cluster(etcd_server.endpoint), etcd_client, keys)
    calls = await open_watches(channel, 3)
    with caplog.at_level(logging.WARNING):
        # The leader key disappears, as when its lease ends: the leader steps down and the
        # standby, next in line, wins.
        candidates = await etcd_client.get_prefix(keys.election_prefix)
        first = min(candidates.kvs, key=lambda kv: kv.create_revision)
        await etcd_client.delete(first.key)
        statuses = [await ended_status(call) for call in calls]
    assert_ended_once_naming(statuses, standby)
    assert errors_in(caplog) == []


async def test_a_resigning_leader_ends_each_watch_once_naming_the_new_leader(
    leader: Controller,
    channel: grpc.aio.Channel,
    etcd_client: EtcdClient,
    keys: Keys,
    make_ha_cluster: Callable[..., HaCluster],
    etcd_server: LocalEtcd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    standby = await standby_in_line(make_ha_cluster(etcd_server.endpoint), etcd_client, keys)
    calls = await open_watches(channel, 3)
    with caplog.at_level(logging.WARNING):
        ended = [asyncio.ensure_future(ended_status(call)) for call in calls]
        await leader.stop()  # what SIGTERM does: resign, then stop serving
        statuses = [await e for e in ended]
    assert_ended_once_naming(statuses, standby)
    assert errors_in(caplog) == []
