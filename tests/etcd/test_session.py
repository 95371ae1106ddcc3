"""Sessions: a lease kept alive by a task, and lost at once, for good, when it cannot be."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from deerflow_common.etcd import EtcdClient, EventKind, Keys, Session, SessionLost

from ..tcp_proxy import Proxy
from .helpers import now

MakeClient = Callable[..., EtcdClient]
MakeProxy = Callable[[], Awaitable[Proxy]]


async def test_a_sessions_lease_is_kept_alive_past_its_ttl(client: EtcdClient, keys: Keys) -> None:
    async with Session(client, ttl=1) as session:
        assert session.ttl == 1
        await client.put(keys.prefix + "alive", b"x", lease=session.lease_id)
        # Proving that nothing happens takes time: three TTLs, nine keepalive rounds.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.lost.wait(), timeout=3 * session.ttl)
        kv = await client.get(keys.prefix + "alive")
        assert kv is not None and kv.lease == session.lease_id
        assert await client.refresh_lease(session.lease_id) > 0


async def test_a_session_whose_lease_is_revoked_reports_lost_within_its_ttl(
    make_client: MakeClient,
) -> None:
    client, other = make_client(), make_client()
    calls: list[str | None] = []
    async with Session(client, ttl=1) as session:
        session.on_lost(lambda s: calls.append(s.lost_reason))
        revoked_at = now()
        await other.revoke_lease(session.lease_id)
        await asyncio.wait_for(session.lost.wait(), timeout=session.ttl + 0.5)
        assert now() - revoked_at <= session.ttl
        assert session.lost_reason is not None and "revoked" in session.lost_reason
        with pytest.raises(SessionLost):
            session.check()
    assert calls == [session.lost_reason], "the callbacks fire once, with the first reason"


async def test_a_session_whose_keepalive_fails_reports_lost_before_etcd_drops_its_keys(
    client: EtcdClient, make_client: MakeClient, make_proxy: MakeProxy, keys: Keys
) -> None:
    proxy = await make_proxy()
    cut_off = make_client(proxy.address)
    key = keys.prefix + "cut-off"
    session = Session(cut_off, ttl=1)
    await session.open()
    try:
        revision = await cut_off.put(key, b"x", lease=session.lease_id)

        async def deletion_seen_at() -> float:
            async with contextlib.aclosing(client.watch_key(key, revision + 1)) as events:
                event = await anext(events)
            assert event.kind is EventKind.DELETE
            return now()

        deletion = asyncio.create_task(deletion_seen_at())
        cut_at = now()
        await proxy.cut()
        await asyncio.wait_for(session.lost.wait(), timeout=session.ttl + 0.5)
        lost_at = now()
        assert lost_at - cut_at <= session.ttl + 0.1
        assert session.lost_reason is not None and "deadline" in session.lost_reason
        deleted_at = await asyncio.wait_for(deletion, timeout=3 * session.ttl)
        # The local deadline is conservative: etcd expires the lease no earlier than the
        # session gives it up, so this process never acts on a lease etcd has dropped.
        assert lost_at <= deleted_at
    finally:
        await session.close()


async def test_a_closed_session_revokes_its_lease_and_counts_as_lost(
    client: EtcdClient, keys: Keys
) -> None:
    session = Session(client, ttl=5)
    async with session:
        await client.put(keys.prefix + "closed", b"x", lease=session.lease_id)
    assert session.lost.is_set() and session.lost_reason == "the session was closed"
    assert await client.get(keys.prefix + "closed") is None
    assert await client.refresh_lease(session.lease_id) <= 0


async def test_guarded_work_is_cancelled_when_the_session_is_lost(
    make_client: MakeClient,
) -> None:
    client, other = make_client(), make_client()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with Session(client, ttl=1) as session:
        guarded = asyncio.create_task(session.guard(forever()))
        await other.revoke_lease(session.lease_id)
        with pytest.raises(SessionLost):
            await asyncio.wait_for(guarded, timeout=session.ttl + 0.5)
        assert cancelled.is_set()
