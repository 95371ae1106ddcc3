"""The controller's life in HA mode: campaign, lead (restore, serve, journal), step down.

One loop per controller process::

    open a session (lease, TTL --lease-ttl) -> campaign -> LEAD -> term ends -> close session
         ^                                                                          |
         +--------------------------------------------------------------------------+

While it campaigns the controller is a standby: the gate refuses client and agent calls and
names the leader it observes; gRPC health is NOT_SERVING.

Leading, in order: fresh scheduler; read the journal and restore its jobs (unfinished tasks
held); open the gate (agents reconnect and report what they run, which is adopted); wait up to
``reconnect_grace_s`` for the agents etcd lists, except those whose lease is not kept alive
(``reconnect``); release the held tasks. Submits are journaled before they are acknowledged;
final results are journaled by group commit.

The term ends, at once and synchronously in the event loop, when the session is lost (its
keepalive missed the lease's deadline: etcd unreachable or the process stalled) or the leader
key disappears: the gate closes, every agent stream is closed and the scheduler is replaced by
an empty one, so nothing more is dispatched under the lost epoch. Agents keep running what
they have and report it to the next leader, which may be this controller again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from deerflow_common.etcd import (
    Backoff,
    Election,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    Keys,
    Leadership,
    Membership,
    NotLeader,
    Session,
    SessionLost,
    observe_leader,
    retry_unavailable,
)
from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.ha.agents import AgentLeaseWatcher
from deerflow_controller.ha.config import HaConfig
from deerflow_controller.ha.journal import Expiry, Journal, load_journal
from deerflow_controller.ha.leader_gate import LeaderGate, Term
from deerflow_controller.ha.reconnect import wait_for_reconnects
from deerflow_controller.ha.restore import JournalTap, restore_jobs
from deerflow_controller.ratelimit import RateLimiter
from deerflow_controller.service.shell import Shell

log = logging.getLogger(__name__)

ServingHook = Callable[[bool], Coroutine[Any, Any, None]]


class HaRunner:
    """Leader election, journal and restore for one controller. ``start`` returns at once;
    ``stop`` resigns (the lease is revoked, so a standby takes over without waiting for it to
    expire)."""

    def __init__(
        self,
        shell: Shell,
        gate: LeaderGate,
        config: HaConfig,
        *,
        set_serving: ServingHook,
        observability: Any = None,
    ) -> None:
        self.shell = shell
        self.gate = gate
        self.config = config
        self.keys = Keys(config.prefix)
        self.client = EtcdClient(config.endpoints, timeout_s=config.etcd_timeout_s)
        self._set_serving = set_serving
        self._observability = observability
        self.tap = JournalTap(shell)
        shell.interceptors.append(self.tap)
        self.term: Term | None = None
        self.terms = 0
        self.agent_watcher: AgentLeaseWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def address(self) -> str:
        return self.config.advertise or self.gate.address

    @property
    def leading(self) -> bool:
        return self.term is not None and not self.term.ended.is_set()

    async def start(self) -> None:
        await self.client.connect()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._campaign_loop(), name="ha-campaign"),
            loop.create_task(self._observe_leader(), name="ha-observe-leader"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        # Resign first (the campaign's end revokes the lease), then keep observing the leader
        # key until the watches that the term's end refuses know the successor's address.
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if task.get_name() == "ha-campaign":
                await self.gate.successor_known()
        await self.client.close()

    # ------------------------------------------------------------------ campaign

    async def _campaign_loop(self) -> None:
        backoff = Backoff(0.1, 1.0)
        while True:
            session = Session(self.client, self.config.lease_ttl_s)
            try:
                await session.open()
            except EtcdUnavailable as e:
                log.warning("cannot open an etcd session (%s); retrying", e)
                await asyncio.sleep(backoff.delay())
                continue
            backoff.reset()
            try:
                await self._campaign(session)
            except (SessionLost, NotLeader) as e:
                log.warning("%s; campaigning again with a new session", e)
            except EtcdError as e:
                log.warning("etcd failed during the campaign (%s); campaigning again", e)
                await asyncio.sleep(backoff.delay())
            finally:
                lost = session.lost.is_set()
                with contextlib.suppress(Exception):
                    await asyncio.shield(session.close())
                if lost:
                    self._revoke_later(session.lease_id)

    def _revoke_later(self, lease_id: int) -> None:
        """Revoke a lost session's lease once etcd answers again. etcd restores leases when it
        restarts, so after an outage our old candidate key would otherwise sit at the head of
        the election for a whole TTL, delaying every new leader."""

        async def revoke() -> None:
            with contextlib.suppress(EtcdError, TimeoutError):
                async with asyncio.timeout(self.config.lease_ttl_s * 4):
                    await retry_unavailable(lambda: self.client.revoke_lease(lease_id))

        task = asyncio.get_running_loop().create_task(revoke())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _campaign(self, session: Session) -> None:
        await session.guard(
            self.client.put(
                self.keys.controller(_segment(self.address)),
                self.address.encode(),
                lease=session.lease_id,
            )
        )
        election = Election(self.client, session, self.keys)
        log.info("campaigning for leadership as %s", self.address)
        lead = await election.campaign(self.address)
        await self._lead(session, lead)

    async def _observe_leader(self) -> None:
        """Keep the gate's idea of the leader current, for the refusals it sends."""
        async with contextlib.aclosing(observe_leader(self.client, self.keys)) as leaders:
            async for leader in leaders:
                self.gate.leader_address = leader.value if leader is not None else ""

    # ------------------------------------------------------------------ leading

    async def _lead(self, session: Session, lead: Leadership) -> None:
        shell = self.shell
        epoch = lead.epoch
        started = time.monotonic()
        self._reset_shell(epoch)
        journal = Journal(
            self.client,
            self.keys,
            epoch,
            max_record_bytes=self.config.journal_max_payload_bytes,
            leader_key=lead.key,
            on_fenced=lambda: self._end_term(term, "a journal write found the leader key gone"),
            clock=shell.clock,
        )
        term = Term(epoch, journal, on_delivered=self._delivered)
        self.term = term
        self.terms += 1
        # The fence: losing the lease ends the term in the same loop turn, before anything else
        # can be dispatched.
        unregister = session.on_lost(lambda s: self._end_term(term, s.lost_reason or "lease lost"))
        loop = asyncio.get_running_loop()
        ender = loop.create_task(self._end_when_lost(lead, term))
        watcher_task: asyncio.Task[None] | None = None
        try:
            jobs, orphans = await session.guard(load_journal(self.client, self.keys))
            known = await session.guard(Membership.agents(self.client, self.keys).members())
            lead.check()
            now = shell.clock()
            restored = restore_jobs(shell, jobs, now)
            self._observe_scheduler()
            journal.start()
            for job_id in (*orphans, *restored.expired):
                journal.forget(job_id)
            for job_id, expiry in restored.kept.items():
                journal.expire_at(job_id, expiry, recorded=True)
            self.tap.begin(journal)
            self.gate.leader_address = self.address
            self.gate.term = term
            watcher = AgentLeaseWatcher(
                shell, self.client, self.keys, self.config.agent_lease_grace_s
            )
            self.agent_watcher = watcher
            watcher_task = loop.create_task(watcher.run())
            await self._set_serving(True)
            log.info(
                "leading as %s, epoch %d (%.0f ms after winning): restored %d jobs (%d tasks, "
                "%d finished), deleted %d expired; waiting up to %.3g s for %d known agents",
                self.address,
                epoch,
                (time.monotonic() - started) * 1000,
                restored.jobs,
                restored.tasks,
                restored.finished,
                len(restored.expired),
                self.config.reconnect_grace_s,
                len(known),
            )
            await session.guard(
                wait_for_reconnects(
                    shell, self.client, self.keys, known, self.config.reconnect_grace_s
                )
            )
            if not term.ended.is_set():
                released = shell.release_restored()
                log.info(
                    "reconnect grace over: %d agents connected, %d restored tasks released",
                    len(shell.scheduler.agents),
                    released,
                )
            await session.guard(term.ended.wait())
        finally:
            unregister()
            ender.cancel()
            if watcher_task is not None:
                watcher_task.cancel()
            self._end_term(term, "shutting down" if self._stopping else "the campaign ended")
            await journal.wait_closed()

    async def _end_when_lost(self, lead: Leadership, term: Term) -> None:
        await lead.lost.wait()
        self._end_term(term, lead.lost_reason or "the leader key is gone")

    def _end_term(self, term: Term, reason: str) -> None:
        """Stop acting as leader now (synchronous: nothing is dispatched after this)."""
        if term.ended.is_set():
            return
        term.ended.set()
        if self.gate.term is term:
            self.gate.term = None
        if self.gate.leader_address == self.address:
            self.gate.leader_address = ""
        self.tap.end()
        if term.journal is not None:
            term.journal.close()
        shell = self.shell
        sessions = list(shell.sessions.values())
        shell.sessions.clear()
        for agent_session in sessions:
            agent_session.close()
        self._reset_shell(shell.config.epoch)
        log.log(
            logging.INFO if self._stopping else logging.WARNING,
            "stopped leading (epoch %d): %s; dispatching stopped, %d agent streams closed",
            term.epoch,
            reason,
            len(sessions),
        )
        task = asyncio.get_running_loop().create_task(self._set_serving(False))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _reset_shell(self, epoch: int) -> None:
        """An empty scheduler for the next term: a leader's state is rebuilt from the journal,
        never carried over from an earlier term."""
        shell = self.shell
        shell.config = replace(shell.config, epoch=epoch)
        shell.replace_scheduler(
            Scheduler(shell.config.scheduler, limiter=RateLimiter(shell.config.limits))
        )
        self._observe_scheduler()

    def _observe_scheduler(self) -> None:
        """Point the metrics/trace tap at the shell's scheduler, past the events it holds
        (restored ones were counted by the leader they happened under)."""
        tap = getattr(self._observability, "tap", None)
        if tap is not None:
            tap.follow(self.shell.scheduler)

    def _delivered(self, job_id: str) -> None:
        term = self.term
        if term is None or term.journal is None or term.ended.is_set():
            return
        journal = term.journal
        expires_at = self.shell.clock() + self.config.delivered_retention_s
        journal.expire_at(job_id, Expiry(expires_at, delivered=True))


def _segment(address: str) -> str:
    """A controller's address as one key segment."""
    return address.replace("/", "_")
