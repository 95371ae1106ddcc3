"""A new leader's reconnect grace: which agents it waits for before re-running restored work.

After a takeover the agents etcd lists get up to ``reconnect_grace_s`` to reconnect and report
what they still run, so that work is adopted instead of run again. An agent that died together
with the old leader (the same node went down) stays listed until its lease expires (agent
``--lease-ttl``, 5 s), longer than the election takes (controller lease, 3 s): waiting for it
made such failovers take the whole grace (5.1 s instead of about 3 s).

So the wait also ends for an agent whose lease is visibly not being kept alive. A live agent's
session refreshes its lease every TTL/3 (``deerflow_common.etcd.session``), so etcd's remaining
TTL for it never falls much below two thirds of the granted TTL; a lease whose last refresh is
more than one keepalive interval plus ``LIVENESS_MARGIN_S`` ago belongs to an agent that is
dead, hung, or cut off from etcd, none of which reconnects within the grace. A live agent that
is merely slow to reconnect keeps its lease fresh, so it is still waited for and its work is
not run again early.

Rejected: agents refreshing more often, or a shorter agent TTL. Either narrows the window
without closing it (the record outlives the process by up to a TTL whatever the rate), costs
etcd a write per agent per interval for ever, and a shorter TTL makes a live agent lose its
lease, and have its work run again, on a shorter etcd hiccup. This check costs one
LeaseTimeToLive per still-missing agent per poll, and only during a takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping

from deerflow_common.etcd import EtcdClient, EtcdError, Keys, Member, Membership
from deerflow_controller.service.shell import Shell

log = logging.getLogger(__name__)

LIVENESS_MARGIN_S = 1.0
"""How late (seconds) a live agent's keepalive may be before its lease counts as not kept
alive: an event loop busy for a moment on a loaded machine, plus an etcd round trip."""

POLL_S = 0.1
"""How often (seconds) the still-missing agents' leases are looked at. etcd reports the
remaining TTL in whole seconds, so polling faster gains little."""


def lease_kept_alive(remaining_s: int, granted_s: int, margin_s: float = LIVENESS_MARGIN_S) -> bool:
    """Whether a lease with ``remaining_s`` of ``granted_s`` seconds left (as etcd reports
    them: truncated to whole seconds, -1 when the lease is gone) is being refreshed by a
    live session. Its holder refreshes every ``granted_s / 3``; the lease was last refreshed
    at least ``granted_s - remaining_s - 1`` seconds ago (the truncation may hide up to one
    second). With the agents' 5 s TTL: not kept alive once silent for more than 3 s."""
    if remaining_s < 0:
        return False
    silent_at_least_s = granted_s - remaining_s - 1
    return silent_at_least_s <= granted_s / 3 + margin_s


async def wait_for_reconnects(
    shell: Shell,
    client: EtcdClient,
    keys: Keys,
    known: Mapping[str, Member],
    grace_s: float,
    *,
    poll_s: float = POLL_S,
) -> list[str]:
    """Block until every agent etcd lists is connected to ``shell``, or no longer listed, or
    has a lease that is not kept alive, or ``grace_s`` seconds have passed. ``known`` is the
    listing read at takeover; etcd is read again every ``poll_s`` seconds. Returns the ids of
    the agents given up on because of their lease (for the log).

    etcd failures while looking are not fatal: the agents last listed are then simply waited
    for (up to the grace), as before this check existed. Cancel it to stop waiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    membership = Membership.agents(client, keys)
    waiting = set(known)
    given_up: list[str] = []
    while True:
        with contextlib.suppress(EtcdError):
            listed = await membership.members()
            missing = [m for m in listed.values() if m.member_id not in shell.scheduler.agents]
            alive = await _leases_alive(client, missing)
            waiting = {m.member_id for m, ok in zip(missing, alive, strict=True) if ok}
            for member, ok in zip(missing, alive, strict=True):
                if not ok and member.member_id not in given_up:
                    given_up.append(member.member_id)
                    log.info(
                        "not waiting for agent %s: its etcd lease is not kept alive (it died, "
                        "hung or lost etcd); its unfinished work runs elsewhere",
                        member.member_id,
                    )
        now = loop.time()
        if _all_connected(shell, waiting) or now >= deadline:
            return given_up
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(poll_s, deadline - now)):
                await shell.wait_for_membership(functools.partial(_all_connected, shell, waiting))


def _all_connected(shell: Shell, agent_ids: set[str]) -> bool:
    return not agent_ids - shell.scheduler.agents.keys()


async def _leases_alive(client: EtcdClient, members: list[Member]) -> list[bool]:
    """Whether each member's lease is kept alive; True when etcd cannot tell (an error, or a
    record without a lease), so that doubt keeps the wait."""

    async def one(member: Member) -> bool:
        if not member.lease:
            return True
        try:
            remaining, granted = await client.lease_time_to_live(member.lease)
        except EtcdError:
            return True
        return lease_kept_alive(remaining, granted)

    return list(await asyncio.gather(*(one(m) for m in members)))
