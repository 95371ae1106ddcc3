"""The leader's watch over agent leases: an agent whose lease ended is dead even when its
stream still looks alive (a partition between the agent and etcd, a hung process whose socket
lingers). After ``agent_lease_grace_s`` without a new registration, its stream is closed and
its unfinished attempts run elsewhere (the lost run counts as an attempt, as for a broken
stream). The reverse case, a stream that breaks while the lease lives, is the stream's own
business (``AgentService``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from deerflow_common.etcd import EtcdClient, Keys, MemberEventKind, Membership
from deerflow_controller.service.shell import Shell

log = logging.getLogger(__name__)


class AgentLeaseWatcher:
    """Runs while this controller leads; :meth:`run` until cancelled."""

    def __init__(self, shell: Shell, client: EtcdClient, keys: Keys, grace_s: float) -> None:
        self.shell = shell
        self.membership = Membership.agents(client, keys)
        self.grace_s = grace_s
        self.registered: set[str] = set()
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self.expired = 0
        """Agents disconnected because their lease ended (for tests and stats)."""

    async def run(self) -> None:
        try:
            async with contextlib.aclosing(self.membership.watch()) as events:
                async for event in events:
                    agent_id = event.member.member_id
                    if event.kind is MemberEventKind.LEFT:
                        self.registered.discard(agent_id)
                        self._schedule(agent_id)
                    else:
                        self.registered.add(agent_id)
                        timer = self._expiries.pop(agent_id, None)
                        if timer is not None:
                            timer.cancel()
        finally:
            for timer in self._expiries.values():
                timer.cancel()
            self._expiries.clear()

    def _schedule(self, agent_id: str) -> None:
        if agent_id in self._expiries:
            return
        loop = asyncio.get_running_loop()
        self._expiries[agent_id] = loop.call_later(self.grace_s, self._expire, agent_id)

    def _expire(self, agent_id: str) -> None:
        self._expiries.pop(agent_id, None)
        if agent_id in self.registered:
            return
        if agent_id not in self.shell.sessions:
            return
        log.warning(
            "agent %s lost its etcd lease %.3g s ago and did not register again; closing its "
            "stream and running its attempts elsewhere",
            agent_id,
            self.grace_s,
        )
        self.expired += 1
        self.shell.disconnect_agent(agent_id)
