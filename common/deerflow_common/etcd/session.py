"""A session: one etcd lease kept alive by this process, and the moment it is lost.

aetcd's lease ``refresh()`` is a single round trip, so the session runs its own keepalive task.
It refreshes every TTL/3 and keeps a local *deadline*: the time the last successful refresh was
sent plus the TTL etcd granted. etcd started its countdown no earlier than that send, so the
deadline never falls after etcd's own expiry: when this process believes it still holds the
lease, it does (up to clock-rate drift over a few seconds).

The session is LOST, at once and for good, when
  * etcd answers a refresh with TTL <= 0 (the lease expired or was revoked), or
  * the deadline passes without a successful refresh (etcd unreachable, or too slow); refreshes
    that fail before the deadline are retried with backoff, so a short etcd blip (a restart, a
    leader election) costs nothing, or
  * the session is closed.
Then ``lost`` is set, ``lost_reason`` says why, the callbacks run, and the lease is never
refreshed again (a best-effort revoke removes whatever etcd still holds). Whatever was attached
to the lease (a candidate key, an agent record) must be treated as gone: open a new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ..backoff import Backoff
from .errors import EtcdError, SessionLost

if TYPE_CHECKING:  # the client imports aetcd; a session is always given one
    from .client import EtcdClient

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TTL_S = 5

LostCallback = Callable[["Session"], None]
"""Called once, synchronously, in the event loop, when the session is lost."""

_CLOSED = "the session was closed"


class Session:
    """A lease with a keepalive task. ``async with Session(client, ttl=5) as session:``.

    ``ttl`` is in whole seconds (etcd leases are); etcd may grant more than asked (its minimum
    is 1.5 x its election timeout). Loss is detected no later than the lease's deadline, which
    is at most one TTL after the last successful refresh.
    """

    def __init__(self, client: EtcdClient, ttl: int = DEFAULT_TTL_S) -> None:
        if ttl < 1:
            raise ValueError(f"session TTL must be at least 1 s, got {ttl}")
        self.client = client
        self._requested_ttl = ttl
        self._lease_id = 0
        self._ttl = 0
        self._deadline = 0.0
        self._keepalive: asyncio.Task[None] | None = None
        self._callbacks: list[LostCallback] = []
        self.lost = asyncio.Event()
        """Set once the session is lost; never cleared."""
        self.lost_reason: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Grant the lease and start the keepalive. Blocks for one round trip; raises
        ``EtcdUnavailable`` when etcd cannot be reached (nothing was granted then)."""
        if self._lease_id:
            raise RuntimeError("a Session is opened once; make a new one after it is lost")
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self._lease_id, self._ttl = await self.client.grant_lease(self._requested_ttl)
        self._deadline = sent + self._ttl
        self._keepalive = asyncio.create_task(
            self._keep_alive(), name=f"etcd-session-{self._lease_id:x}"
        )

    async def close(self) -> None:
        """Stop the keepalive, mark the session lost ("closed") so that everything relying on
        it stops, then revoke the lease (best effort, bounded by the client's timeout) so etcd
        drops the attached keys now instead of at expiry."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.wait([self._keepalive])
        was_lost = self.lost.is_set()
        self._mark_lost(_CLOSED)
        if self._lease_id and not was_lost:
            await self._revoke_quietly()

    # -- state --------------------------------------------------------------------------------

    @property
    def lease_id(self) -> int:
        if not self._lease_id:
            raise RuntimeError("the session is not open")
        return self._lease_id

    @property
    def ttl(self) -> int:
        """The TTL etcd granted, in seconds."""
        return self._ttl

    @property
    def deadline(self) -> float:
        """Event-loop time (``loop.time()``) at which the lease may expire unless refreshed."""
        return self._deadline

    def check(self) -> None:
        """Raise ``SessionLost`` if the session is lost."""
        if self.lost.is_set():
            raise SessionLost(self.lost_reason or "unknown")

    def on_lost(self, callback: LostCallback) -> Callable[[], None]:
        """Call ``callback(session)`` when the session is lost, or at once if it already is.
        Returns a function that unregisters it."""
        if self.lost.is_set():
            callback(self)
            return lambda: None
        self._callbacks.append(callback)

        def unregister() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unregister

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` raced against losing this session.

        Returns its result if it finishes first. If the session is lost first (or both happen in
        the same loop iteration), it is cancelled and awaited, and ``SessionLost`` is raised: a
        result obtained under a lost lease is not to be trusted. Cancelling the caller cancels
        and awaits ``awaitable`` too.
        """
        task = asyncio.ensure_future(awaitable)
        if self.lost.is_set():
            await _cancel_and_wait(task)
            self.check()
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancel_and_wait(task)
            raise
        finally:
            lost.cancel()
        if self.lost.is_set():
            await _cancel_and_wait(task)
            self.check()
        return task.result()

    # -- keepalive ----------------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._ttl / 3
        backoff = Backoff(min(0.05, interval), interval)
        next_refresh = self._deadline - self._ttl + interval
        while True:
            await asyncio.sleep(max(0.0, min(next_refresh, self._deadline) - loop.time()))
            sent = loop.time()
            remaining = self._deadline - sent
            if remaining <= 0:
                self._lose("no keepalive succeeded before the lease's deadline")
                return
            try:
                async with asyncio.timeout(remaining):
                    ttl = await self.client.refresh_lease(self._lease_id)
            except TimeoutError:
                self._lose("no keepalive succeeded before the lease's deadline")
                return
            except EtcdError as e:
                delay = min(backoff.delay(), max(0.0, self._deadline - loop.time()))
                log.warning(
                    "etcd lease %x keepalive failed (%s); retrying in %.2f s, "
                    "%.2f s before it is lost",
                    self._lease_id,
                    e,
                    delay,
                    self._deadline - loop.time(),
                )
                next_refresh = loop.time() + delay
                continue
            if ttl <= 0:
                self._lose("etcd reports the lease expired or was revoked", revoke=False)
                return
            self._deadline = sent + ttl
            backoff.reset()
            next_refresh = sent + interval

    def _lose(self, reason: str, *, revoke: bool = True) -> None:
        log.warning("etcd session %x lost: %s", self._lease_id, reason)
        self._mark_lost(reason)
        if revoke:
            # etcd may still hold the lease (it extends leases when it restarts): drop it so
            # the keys we no longer vouch for vanish now. A failure changes nothing here.
            task = asyncio.get_running_loop().create_task(self._revoke_quietly())
            _background.add(task)
            task.add_done_callback(_background.discard)

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("etcd session lost-callback %r failed", callback)

    async def _revoke_quietly(self) -> None:
        with contextlib.suppress(EtcdError, TimeoutError):
            async with asyncio.timeout(self.client.timeout_s):
                await self.client.revoke_lease(self._lease_id)


_background: set[asyncio.Task[None]] = set()
"""Fire-and-forget revokes, held so the loop does not drop them half-way."""


async def _cancel_and_wait(task: asyncio.Future[T]) -> None:
    """Cancel ``task`` and wait for it to finish, consuming its outcome.

    Cancels again every second while it runs on: code that swallows a cancellation (Python
    3.11's ``asyncio.wait_for`` can, inside libraries) must not keep a lost session's work
    alive."""
    while not task.done():
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=1.0)
        if not done:
            log.warning("guarded work ignored its cancellation; cancelling it again")
    if not task.cancelled():
        task.exception()
