"""Membership: records under leases, and a watch that reports joins, updates and leaves."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import pytest

from deerflow_common.etcd import (
    EtcdClient,
    Keys,
    MemberEventKind,
    Membership,
    Session,
    SessionLost,
    register,
)

from ..tcp_proxy import Proxy
from .helpers import next_within

MakeClient = Callable[..., EtcdClient]
MakeProxy = Callable[[], Awaitable[Proxy]]

INFO = {"address": "10.0.0.7:7100", "handlers": ["echo", "llm"], "capacity": {"slots": 8}}


async def test_registered_members_appear_and_disappear_when_their_lease_expires(
    make_client: MakeClient, make_proxy: MakeProxy, keys: Keys
) -> None:
    controller = make_client()
    proxy = await make_proxy()
    doomed = make_client(proxy.address)
    async with Session(make_client(), ttl=5) as early, Session(doomed, ttl=1) as late:
        await register(early, keys, "agent-1", INFO)
        members = Membership.agents(controller, keys)
        async with contextlib.aclosing(members.watch()) as events:
            joined = await next_within(events, 5)
            assert (joined.kind, joined.member.member_id) == (MemberEventKind.JOINED, "agent-1")
            assert joined.member.info == INFO and joined.member.lease == early.lease_id

            await register(late, keys, "agent-2", {"address": "10.0.0.8:7100"})
            joined = await next_within(events, 5)
            assert (joined.kind, joined.member.member_id) == (MemberEventKind.JOINED, "agent-2")
            assert set(await members.members()) == {"agent-1", "agent-2"}

            await register(early, keys, "agent-1", {**INFO, "capacity": {"slots": 16}})
            updated = await next_within(events, 5)
            assert (updated.kind, updated.member.member_id) == (MemberEventKind.UPDATED, "agent-1")
            assert updated.member.info["capacity"] == {"slots": 16}

            # agent-2 is cut off from etcd: its lease expires and etcd deletes its record.
            await proxy.cut()
            left = await next_within(events, 4 * late.ttl)
            assert (left.kind, left.member.member_id) == (MemberEventKind.LEFT, "agent-2")
            assert left.member.info == {"address": "10.0.0.8:7100"}, "the last known record"
            assert late.lost.is_set()

            # agent-1 shuts down cleanly: its session revokes the lease.
            await early.close()
            left = await next_within(events, 5)
            assert (left.kind, left.member.member_id) == (MemberEventKind.LEFT, "agent-1")
        assert await members.members() == {}


async def test_a_record_that_is_not_a_json_object_is_ignored(
    client: EtcdClient, keys: Keys
) -> None:
    await client.put(keys.agent("broken"), b"not json")
    await client.put(keys.agent("listed"), b"[1, 2]")
    async with Session(client, ttl=5) as session:
        await register(session, keys, "fine", {"address": "a:1"})
        assert set(await Membership.agents(client, keys).members()) == {"fine"}


async def test_registering_on_a_lost_session_is_refused(client: EtcdClient, keys: Keys) -> None:
    session = Session(client, ttl=5)
    async with session:
        pass
    with pytest.raises(SessionLost):
        await register(session, keys, "agent-1", INFO)
    assert await client.get(keys.agent("agent-1")) is None
