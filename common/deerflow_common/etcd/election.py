"""Leader election on etcd, after etcd's own ``client/v3/concurrency`` election.

Each candidate puts one key under the election prefix, attached to its session's lease; the
key with the lowest create revision leads, and that create revision is the leader's **epoch**.
Epochs only grow: a later leader's key was created after every earlier leader's key. Every
assignment carries the epoch and agents refuse a lower one, so a deposed leader that has not
noticed yet cannot double-dispatch.

The known trap, designed out here: a candidate whose session expires while it waits would, in a
naive implementation, keep waiting (or even believe it won once its predecessors are gone).
``campaign`` is raced against the session: losing the session ends the campaign with
``SessionLost``. A leader learns of losing its session through ``Leadership.lost``, set from
the session's loss callback in the same loop iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass

from .client import EtcdClient, EventKind, KeyValue, WatchEvent, retry_unavailable
from .errors import EtcdError, NotLeader, SessionLost, WatchCompacted
from .keys import Keys
from .session import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads, as etcd says now."""

    value: str
    """What the leader proclaimed (the controller's address, say)."""
    epoch: int
    """Create revision of the leader's key."""
    key: str


class Leadership:
    """Proof of having won a campaign, valid until ``lost`` is set.

    Check ``lost`` (or call ``check()``) before every action that needs leadership, and stop
    them all when it is set: it is set when the session is lost, when the leader key is deleted
    (by anyone), and on ``resign()``. It is never cleared; campaign again for a new epoch.
    """

    def __init__(self, key: str, value: str, epoch: int) -> None:
        self.key = key
        self.value = value
        self.epoch = epoch
        self.lost = asyncio.Event()
        self.lost_reason: str | None = None

    def check(self) -> None:
        """Raise ``NotLeader`` once leadership is lost."""
        if self.lost.is_set():
            raise NotLeader(f"leadership of epoch {self.epoch} lost: {self.lost_reason}")

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            log.warning("leadership of epoch %d lost: %s", self.epoch, reason)
            self.lost_reason = reason
            self.lost.set()

    def __repr__(self) -> str:
        state = f"lost: {self.lost_reason}" if self.lost.is_set() else "leading"
        return f"Leadership(epoch={self.epoch}, value={self.value!r}, {state})"


class Election:
    """One candidate (this process's session) in the election under ``keys.election_prefix``.

    One ``Election`` campaigns at most once at a time. After losing leadership, campaign again
    with a new ``Session`` (the old one is lost) or the same one (after ``resign``).
    """

    def __init__(self, client: EtcdClient, session: Session, keys: Keys) -> None:
        self._client = client
        self._session = session
        self._keys = keys
        self._leadership: Leadership | None = None
        self._monitor: asyncio.Task[None] | None = None

    @property
    def leadership(self) -> Leadership | None:
        """The current leadership, if this candidate won and has not lost it yet."""
        lead = self._leadership
        return lead if lead is not None and not lead.lost.is_set() else None

    async def campaign(self, value: str) -> Leadership:
        """Become a candidate and block until this candidate leads; return the ``Leadership``.

        Blocks while any candidate with a lower create revision holds its key (for as long as
        that takes). While etcd is unreachable it retries with backoff; if that outlasts the
        session, the session is lost and the campaign ends.
        Raises ``SessionLost`` as soon as the session is lost (before or during the campaign;
        a win decided under a lost lease is not returned). On ``SessionLost`` or cancellation
        the candidate key is deleted (best effort), so a withdrawn candidate never leads.
        """
        self._session.check()
        if self.leadership is not None:
            raise RuntimeError("this candidate already leads; resign before campaigning again")
        key = self._keys.election_candidate(self._session.lease_id)
        created_at: list[int] = []
        try:
            epoch = await self._session.guard(self._campaign(key, value, created_at))
        except BaseException:
            if created_at:
                await self._withdraw(key, created_at[0])
            raise
        lead = Leadership(key, value, epoch)
        self._leadership = lead
        monitor = asyncio.create_task(self._watch_own_key(lead), name=f"etcd-leader-{epoch}")
        self._monitor = monitor

        def session_lost(session: Session) -> None:
            lead._lose(f"session lost: {session.lost_reason}")
            monitor.cancel()

        # Registered with no await since the guard saw the session alive, so no loss slips by.
        unregister = self._session.on_lost(session_lost)
        monitor.add_done_callback(lambda _: unregister())
        log.info("leading with epoch %d as %r", epoch, value)
        return lead

    async def proclaim(self, value: str) -> None:
        """Change the leader's value without losing the epoch. One round trip.
        Raises ``NotLeader`` if this candidate does not lead (any more)."""
        lead = self._require_leadership()
        ok = await self._client.put_if_create_revision(
            lead.key, value.encode(), lead.epoch, lease=self._session.lease_id
        )
        if not ok:
            lead._lose("the leader key was deleted")
            lead.check()
        lead.value = value

    async def resign(self) -> None:
        """Give up leadership: ``lost`` is set first (so this process stops acting as leader),
        then the key is deleted, letting the next candidate lead. One round trip; does nothing
        if this candidate does not lead. The session stays usable. Raises ``EtcdUnavailable``
        if etcd cannot be reached: leadership is given up all the same, and the key goes when
        the session is closed or its lease expires."""
        lead = self._leadership
        if lead is None:
            return
        self._leadership = None
        lead._lose("resigned")
        if self._monitor is not None:
            self._monitor.cancel()
        await self._client.delete_if_create_revision(lead.key, lead.epoch)

    async def leader(self) -> Leader | None:
        """The current leader, or None when there is no candidate. One round trip."""
        return await current_leader(self._client, self._keys)

    def observe(self) -> AsyncGenerator[Leader | None, None]:
        """``observe_leader`` on this election."""
        return observe_leader(self._client, self._keys)

    # -- internals ------------------------------------------------------------------------------

    def _require_leadership(self) -> Leadership:
        lead = self._leadership
        if lead is None:
            raise NotLeader("this candidate does not lead")
        lead.check()
        return lead

    async def _campaign(self, key: str, value: str, created_at: list[int]) -> int:
        lease = self._session.lease_id
        created, kv = await retry_unavailable(
            lambda: self._client.put_if_absent(key, value.encode(), lease=lease)
        )
        created_at.append(kv.create_revision)
        if not created and kv.value != value.encode():
            await retry_unavailable(
                lambda: self._client.put_if_create_revision(
                    key, value.encode(), kv.create_revision, lease=lease
                )
            )
        await self._wait_for_predecessors(kv.create_revision)
        # If the lease ended while we waited, etcd deleted our key, and a later candidate may
        # lead: winning requires our key, this incarnation of it, to still be there.
        mine = await retry_unavailable(lambda: self._client.get(key))
        if mine is None or mine.create_revision != kv.create_revision:
            raise SessionLost("the candidate key vanished while campaigning")
        return kv.create_revision

    async def _wait_for_predecessors(self, my_revision: int) -> None:
        """Block until no key under the prefix was created before ``my_revision``. Waits on the
        deletion of the closest predecessor only, so a deletion wakes one candidate, not all."""
        prefix = self._keys.election_prefix
        while True:
            snapshot = await retry_unavailable(lambda: self._client.get_prefix(prefix))
            earlier = [kv for kv in snapshot.kvs if kv.create_revision < my_revision]
            if not earlier:
                return
            closest = max(earlier, key=lambda kv: kv.create_revision)
            with contextlib.suppress(WatchCompacted):
                watch = self._client.watch_key(closest.key, snapshot.revision + 1)
                async with contextlib.aclosing(watch):
                    async for event in watch:
                        if event.kind is EventKind.DELETE:
                            break

    async def _withdraw(self, key: str, create_revision: int) -> None:
        with contextlib.suppress(EtcdError, TimeoutError):
            async with asyncio.timeout(self._client.timeout_s):
                await self._client.delete_if_create_revision(key, create_revision)

    async def _watch_own_key(self, lead: Leadership) -> None:
        """Set ``lead.lost`` when the leader key is deleted or replaced, by anyone."""
        try:
            await self._until_key_gone(lead)
        except EtcdError as e:
            lead._lose(f"watching the leader key failed: {e}")
        else:
            lead._lose("the leader key was deleted")

    async def _until_key_gone(self, lead: Leadership) -> None:
        while True:
            revision = await retry_unavailable(self._client.current_revision)
            kv = await retry_unavailable(lambda: self._client.get(lead.key))
            if kv is None or kv.create_revision != lead.epoch:
                return
            with contextlib.suppress(WatchCompacted):
                watch = self._client.watch_key(lead.key, revision + 1)
                async with contextlib.aclosing(watch):
                    async for event in watch:
                        if event.kind is EventKind.DELETE or event.create_revision != lead.epoch:
                            return


async def current_leader(client: EtcdClient, keys: Keys) -> Leader | None:
    """Who leads the election under ``keys`` now, or None when there is no candidate. One
    round trip; needs no session (agents and clients use it to find the leader)."""
    snapshot = await client.get_prefix(keys.election_prefix)
    return _lowest(snapshot.kvs)


async def observe_leader(client: EtcdClient, keys: Keys) -> AsyncGenerator[Leader | None, None]:
    """The leader now, then every change of leader (or of its value), in order.

    Yields None while there is no candidate at all. Blocks between changes; never ends by
    itself (it survives etcd restarts and compactions). Needs no session: agents and clients
    use it to follow the leader. Cancel the consumer or ``aclose()`` to stop.
    """
    prefix = keys.election_prefix
    current: Leader | None = None
    first = True
    while True:
        snapshot = await retry_unavailable(lambda: client.get_prefix(prefix))
        candidates = {kv.key: kv for kv in snapshot.kvs}
        leader = _lowest(candidates.values())
        if first or leader != current:
            first, current = False, leader
            yield leader
        try:
            async with contextlib.aclosing(
                client.watch_prefix(prefix, snapshot.revision + 1)
            ) as events:
                async for event in events:
                    if event.kind is EventKind.PUT:
                        candidates[event.key] = _event_kv(event)
                    else:
                        candidates.pop(event.key, None)
                    leader = _lowest(candidates.values())
                    if leader != current:
                        current = leader
                        yield leader
        except WatchCompacted as e:
            log.info("election observer resyncing: %s", e)


def _event_kv(event: WatchEvent) -> KeyValue:
    return KeyValue(
        key=event.key,
        value=event.value,
        create_revision=event.create_revision,
        mod_revision=event.mod_revision,
        version=0,
        lease=event.lease,
    )


def _lowest(kvs: Iterable[KeyValue]) -> Leader | None:
    best = min(kvs, key=lambda kv: kv.create_revision, default=None)
    if best is None:
        return None
    return Leader(value=best.value.decode(), epoch=best.create_revision, key=best.key)
