"""The agent's presence in etcd (``--etcd``): its record under a lease, and the leader it follows.

- **Registration**: ``agents/<id>`` holds the agent's handlers, labels and capacity, attached to
  a lease of ``--lease-ttl`` seconds kept alive by a :class:`Session`. When the lease is lost
  (etcd unreachable past the deadline), the agent registers again with a new lease as soon as
  etcd answers; its attempts keep running meanwhile. The leader treats an agent whose lease
  ended as dead after a short grace, whatever its stream looks like.
- **Leader discovery**: the agent follows the election's leader key and tells the
  :class:`Agent`, which moves its stream to the new leader by itself.

On exit (after a drain) the lease is revoked, so the record disappears at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from deerflow_common.etcd import (
    Backoff,
    EtcdClient,
    EtcdError,
    Keys,
    Session,
    observe_leader,
    register,
)

from ._load import machine_capacity
from ._session import Agent

log = logging.getLogger(__name__)


class EtcdPresence:
    """Registration and leader following for one agent. ``async with EtcdPresence(...)``."""

    def __init__(
        self,
        agent: Agent,
        endpoints: str | Sequence[str],
        prefix: str,
        *,
        lease_ttl_s: int = 5,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.agent = agent
        self.keys = Keys(prefix)
        self.client = EtcdClient(endpoints, timeout_s=2.0)
        self.lease_ttl_s = lease_ttl_s
        self.extra = dict(extra or {})
        self.registrations = 0
        self._session: Session | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def record(self) -> dict[str, Any]:
        cfg = self.agent.config
        cpus, memory = machine_capacity()
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "handlers": sorted(self.agent.handlers),
            "slots": cfg.slots,
            "cpu_count": cpus,
            "memory_bytes": memory,
            "labels": dict(cfg.labels),
            "version": self.agent.version,
            **self.extra,
        }

    async def __aenter__(self) -> EtcdPresence:
        await self.client.connect()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._register_loop(), name="agent-etcd-register"),
            loop.create_task(self._follow_leader(), name="agent-etcd-leader"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
        await self.client.close()

    async def _register_loop(self) -> None:
        backoff = Backoff(0.1, 1.0)
        agent_id = self.agent.config.agent_id
        while True:
            session = Session(self.client, self.lease_ttl_s)
            try:
                await session.open()
                self._session = session
                await session.guard(register(session, self.keys, agent_id, self.record()))
            except EtcdError as e:
                log.warning("cannot register in etcd (%s); retrying", e)
                with contextlib.suppress(Exception):
                    await session.close()
                await asyncio.sleep(backoff.delay())
                continue
            backoff.reset()
            self.registrations += 1
            log.info("registered in etcd as %s (lease %x)", agent_id, session.lease_id)
            await session.lost.wait()
            log.warning(
                "etcd lease lost (%s); running attempts continue, registering again",
                session.lost_reason,
            )

    async def _follow_leader(self) -> None:
        async with contextlib.aclosing(observe_leader(self.client, self.keys)) as leaders:
            async for leader in leaders:
                self.agent.follow_leader(leader.value if leader is not None else "")
