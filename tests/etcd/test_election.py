"""Leader election: lowest create revision leads, that revision is the epoch, and a campaign
is raced against losing its session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from deerflow_common.etcd import (
    Election,
    EtcdClient,
    EventKind,
    Keys,
    Leader,
    NotLeader,
    Session,
    SessionLost,
    current_leader,
    observe_leader,
)

from ..tcp_proxy import Proxy
from .helpers import next_within, now

MakeClient = Callable[..., EtcdClient]
MakeProxy = Callable[[], Awaitable[Proxy]]


async def _wait_for_candidate(client: EtcdClient, keys: Keys, session: Session, since: int) -> None:
    """Block until ``session``'s candidate key appears (put at a revision after ``since``)."""
    key = keys.election_candidate(session.lease_id)
    async with contextlib.aclosing(client.watch_key(key, since + 1)) as events:
        event = await next_within(events, 5)
    assert event.kind is EventKind.PUT


async def test_the_first_of_two_candidates_leads_with_its_keys_create_revision_as_epoch(
    make_client: MakeClient, keys: Keys
) -> None:
    a, b = make_client(), make_client()
    async with Session(a, ttl=5) as sa, Session(b, ttl=5) as sb:
        first, second = Election(a, sa, keys), Election(b, sb, keys)
        lead = await first.campaign("controller-a:7000")
        since = await b.current_revision()
        waiting = asyncio.create_task(second.campaign("controller-b:7000"))
        await _wait_for_candidate(b, keys, sb, since)

        kv = await a.get(keys.election_candidate(sa.lease_id))
        assert kv is not None and lead.epoch == kv.create_revision
        assert kv.lease == sa.lease_id
        assert await second.leader() == Leader("controller-a:7000", lead.epoch, kv.key)
        assert not waiting.done(), "the second candidate waits while the first leads"
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting


async def test_the_other_candidate_takes_over_with_a_higher_epoch_when_the_leaders_session_is_lost(
    make_client: MakeClient, keys: Keys
) -> None:
    a, b, admin = make_client(), make_client(), make_client()
    observer = observe_leader(admin, keys)
    async with Session(a, ttl=1) as sa, Session(b, ttl=1) as sb, contextlib.aclosing(observer):
        assert await next_within(observer, 5) is None
        first = await Election(a, sa, keys).campaign("a")
        assert (await next_within(observer, 5)) == Leader("a", first.epoch, first.key)
        since = await b.current_revision()
        second_campaign = asyncio.create_task(Election(b, sb, keys).campaign("b"))
        await _wait_for_candidate(b, keys, sb, since)

        await admin.revoke_lease(sa.lease_id)
        second = await asyncio.wait_for(second_campaign, timeout=5)
        await asyncio.wait_for(first.lost.wait(), timeout=sa.ttl + 0.5)

        assert second.epoch > first.epoch
        assert (await next_within(observer, 5)) == Leader("b", second.epoch, second.key)
        # Whichever comes first: the keepalive hearing "revoked", or the deletion of the key.
        assert first.lost_reason in {
            "session lost: etcd reports the lease expired or was revoked",
            "the leader key was deleted",
        }
        with pytest.raises(NotLeader):
            first.check()
        second.check()


async def test_a_leader_cut_off_from_etcd_steps_down_before_the_other_candidate_leads(
    make_client: MakeClient, make_proxy: MakeProxy, keys: Keys
) -> None:
    proxy = await make_proxy()
    a, b = make_client(proxy.address), make_client()
    sa = Session(a, ttl=1)
    await sa.open()
    try:
        async with Session(b, ttl=1) as sb:
            first = await Election(a, sa, keys).campaign("a")
            since = await b.current_revision()
            second_campaign = asyncio.create_task(Election(b, sb, keys).campaign("b"))
            await _wait_for_candidate(b, keys, sb, since)
            stepped_down: list[float] = []
            first_lost = asyncio.create_task(first.lost.wait())
            first_lost.add_done_callback(lambda _: stepped_down.append(now()))

            await proxy.cut()
            second = await asyncio.wait_for(second_campaign, timeout=4 * sb.ttl)
            took_over = now()

            assert second.epoch > first.epoch
            assert stepped_down and stepped_down[0] <= took_over, (
                "the old leader stops before the new one starts: no two leaders at once"
            )
    finally:
        await sa.close()


async def test_a_campaign_raced_against_session_loss_raises_instead_of_hanging(
    make_client: MakeClient, keys: Keys
) -> None:
    a, b, admin = make_client(), make_client(), make_client()
    async with Session(a, ttl=5) as sa, Session(b, ttl=1) as sb:
        await Election(a, sa, keys).campaign("a")
        since = await b.current_revision()
        waiting = asyncio.create_task(Election(b, sb, keys).campaign("b"))
        await _wait_for_candidate(b, keys, sb, since)

        await admin.revoke_lease(sb.lease_id)
        with pytest.raises(SessionLost):
            await asyncio.wait_for(waiting, timeout=sb.ttl + 0.5)
        assert await b.get(keys.election_candidate(sb.lease_id)) is None


async def test_a_campaign_cut_off_from_etcd_raises_session_lost_within_the_ttl(
    make_client: MakeClient, make_proxy: MakeProxy, keys: Keys
) -> None:
    proxy = await make_proxy()
    a, b = make_client(), make_client(proxy.address)
    async with Session(a, ttl=5) as sa:
        await Election(a, sa, keys).campaign("a")
        sb = Session(b, ttl=1)
        await sb.open()
        try:
            since = await a.current_revision()
            waiting = asyncio.create_task(Election(b, sb, keys).campaign("b"))
            await _wait_for_candidate(a, keys, sb, since)

            cut_at = now()
            await proxy.cut()
            with pytest.raises(SessionLost):
                await asyncio.wait_for(waiting, timeout=sb.ttl + 1)
            assert now() - cut_at <= sb.ttl + 0.2
        finally:
            await sb.close()


async def test_a_campaign_on_a_lost_session_raises_at_once(client: EtcdClient, keys: Keys) -> None:
    session = Session(client, ttl=5)
    async with session:
        pass
    with pytest.raises(SessionLost):
        await Election(client, session, keys).campaign("late")
    assert await current_leader(client, keys) is None


async def test_a_resigning_leader_hands_over_to_the_next_candidate(
    make_client: MakeClient, keys: Keys
) -> None:
    a, b = make_client(), make_client()
    async with Session(a, ttl=5) as sa, Session(b, ttl=5) as sb:
        first_election = Election(a, sa, keys)
        first = await first_election.campaign("a")
        since = await b.current_revision()
        second_campaign = asyncio.create_task(Election(b, sb, keys).campaign("b"))
        await _wait_for_candidate(b, keys, sb, since)

        await first_election.resign()
        assert first.lost.is_set() and first.lost_reason == "resigned"
        second = await asyncio.wait_for(second_campaign, timeout=5)
        assert second.epoch > first.epoch
        assert not sa.lost.is_set(), "resigning keeps the session"
        with pytest.raises(NotLeader):
            await first_election.proclaim("a again")


async def test_a_cancelled_campaign_withdraws_its_candidacy(
    make_client: MakeClient, keys: Keys
) -> None:
    a, b = make_client(), make_client()
    async with Session(a, ttl=5) as sa, Session(b, ttl=5) as sb:
        await Election(a, sa, keys).campaign("a")
        since = await b.current_revision()
        waiting = asyncio.create_task(Election(b, sb, keys).campaign("b"))
        await _wait_for_candidate(b, keys, sb, since)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await b.get(keys.election_candidate(sb.lease_id)) is None
        assert not sb.lost.is_set()


async def test_a_leader_whose_key_is_deleted_loses_leadership(
    client: EtcdClient, keys: Keys
) -> None:
    async with Session(client, ttl=5) as session:
        election = Election(client, session, keys)
        lead = await election.campaign("a")
        await election.proclaim("a, moved")
        assert (await election.leader()) == Leader("a, moved", lead.epoch, lead.key)
        await client.delete(lead.key)
        await asyncio.wait_for(lead.lost.wait(), timeout=5)
        assert lead.lost_reason == "the leader key was deleted"
        assert election.leadership is None
