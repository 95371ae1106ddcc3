"""A thin, typed client over aetcd (asyncio etcd v3) that owns aetcd's gaps.

aetcd gives us the RPCs; this module adds what a control plane needs on top of them:

* typed results (``KeyValue``, ``Snapshot``, ``WatchEvent``) with ``str`` keys;
* named errors (``EtcdUnavailable``, ``WatchCompacted``, ``EtcdError``) instead of aetcd's;
* the compare-on-create-revision writes the election is built from;
* a watch that survives etcd restarts: aetcd's watch raises ``ConnectionFailedError`` when the
  server goes away, so ``watch_prefix`` re-watches from the last revision it delivered + 1 with
  backoff, and the caller sees every event exactly once, in revision order.

* several endpoints (the members of an etcd cluster) on one channel (``endpoints.py``).

Lease keepalive, the other gap, lives in ``session.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import aetcd
import grpc

from ..backoff import Backoff
from .endpoints import grpc_target, parse_endpoints
from .errors import EtcdError, EtcdUnavailable, WatchCompacted

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ENDPOINT = "127.0.0.1:2379"
DEFAULT_TIMEOUT_S = 5.0

_CHANNEL_OPTIONS: dict[str, int] = {
    # After etcd restarts, reconnect within about a second: gRPC's default backoff grows to
    # 120 s, which would leave leases unrefreshed long after etcd is back.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1_000,
    # Ping while streams (watches, keepalives) are open, so a vanished etcd host is noticed in
    # seconds. etcd answers pings no more often than every 5 s (--grpc-keepalive-min-time) and
    # refuses pings without open streams, so stay above 5 s and leave permit_without_calls off.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}

_UNAVAILABLE_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _translate(error: BaseException) -> EtcdError:
    """Map aetcd's and gRPC's exceptions onto ours."""
    if isinstance(error, EtcdError):
        return error
    if isinstance(error, aetcd.RevisionCompactedError):
        return WatchCompacted(0, int(error.compacted_revision))
    if isinstance(
        error,
        aetcd.ConnectionFailedError | aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError,
    ):
        return EtcdUnavailable(f"etcd is unreachable: {error}")
    if isinstance(error, grpc.aio.AioRpcError):
        if error.code() in _UNAVAILABLE_CODES:
            return EtcdUnavailable(f"etcd is unreachable: {error.details()}")
        return EtcdError(f"etcd refused the request: {error.code().name}: {error.details()}")
    return EtcdError(f"etcd request failed: {error!r}")


_ERRORS = (aetcd.ClientError, grpc.aio.AioRpcError)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Raise aetcd's and gRPC's exceptions from the block as ours (see :func:`_translate`)."""
    try:
        yield
    except _ERRORS as e:
        raise _translate(e) from e


def _backoff() -> Backoff:
    """Pauses between tries against an etcd that went away: 0.05 s doubling to 1 s, with equal
    jitter (each pause between half and all of its ceiling)."""
    return Backoff(0.05, 1.0)


class EventKind(Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    """Revision of the put that created this incarnation of the key."""
    mod_revision: int
    version: int
    lease: int
    """Lease the key is attached to; 0 for none."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent range read: the keys under a prefix as of ``revision``. Watch from
    ``revision + 1`` to see every later change and nothing twice."""

    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: EventKind
    key: str
    value: bytes
    """The new value for a put; empty for a delete."""
    mod_revision: int
    """Revision of this change (for a delete: of the deletion)."""
    create_revision: int
    """Create revision of the key after a put; 0 for a delete."""
    lease: int


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=bytes(raw.key).decode(),
        value=bytes(raw.value),
        create_revision=int(raw.create_revision),
        mod_revision=int(raw.mod_revision),
        version=int(raw.version),
        lease=int(raw.lease),
    )


def _event(raw: Any) -> WatchEvent:
    kv = raw.kv
    return WatchEvent(
        kind=EventKind.PUT if raw.kind == "PUT" else EventKind.DELETE,
        key=bytes(kv.key).decode(),
        value=bytes(kv.value),
        mod_revision=int(kv.mod_revision),
        create_revision=int(kv.create_revision),
        lease=int(kv.lease),
    )


class EtcdClient:
    """One connection to etcd, shared by a process's sessions, elections and watches.

    ``endpoints``: one ``host:port``, several comma-separated, or a sequence of them (the
    members of one etcd cluster); with several, the channel uses the first member it can reach
    and moves to another when that one fails (see :func:`grpc_target`).

    Every request has a deadline of ``timeout_s`` seconds; a request that cannot reach etcd or
    misses its deadline raises ``EtcdUnavailable`` (retry with backoff), any other failure
    ``EtcdError``. Watches have no deadline. Use ``async with EtcdClient(...)`` or call
    ``close()``.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINT,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        parsed = parse_endpoints(endpoints)
        self.endpoint = ",".join(f"{host}:{port}" for host, port in parsed)
        """The endpoints as given (``host:port[,host:port...]``), for messages."""
        self.timeout_s = timeout_s
        # aetcd makes its channel's target as f"{host}:{port}": split ours at its last colon.
        host, _, port = grpc_target(parsed).rpartition(":")
        self._raw = aetcd.Client(
            host=host, port=int(port), timeout=timeout_s, options=_CHANNEL_OPTIONS
        )
        self._closed = False

    @property
    def raw(self) -> Any:
        """The underlying ``aetcd.Client``, for requests this wrapper does not cover (the
        journal's batched transactions). Its exceptions are aetcd's, not ours."""
        return self._raw

    async def __aenter__(self) -> EtcdClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the channel. Does not wait for etcd: the first request does."""
        self._closed = False
        with _translated():
            await self._raw.connect()

    async def close(self) -> None:
        """Close the channel. Open watches, and every request after this, raise ``EtcdError``
        (aetcd alone would silently reconnect)."""
        self._closed = True
        await self._raw.close()

    def _open(self) -> Any:
        if self._closed:
            raise EtcdError("the etcd client is closed")
        return self._raw

    # -- reads ------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        with _translated():
            raw = await self._open().get(key.encode())
        return None if raw is None else _kv(raw)

    async def get_prefix(self, prefix: str) -> Snapshot:
        """Every key under ``prefix``, sorted by key, and the revision they were read at."""
        with _translated():
            raw = await self._open().get_prefix(prefix.encode(), sort_order="ascend")
        return Snapshot(kvs=tuple(_kv(kv) for kv in raw), revision=int(raw.header.revision))

    async def current_revision(self) -> int:
        """The store's revision now (a count-only read of one absent key)."""
        with _translated():
            await self._open().connect()
            response = await self._open().kvstub.Range(
                aetcd.rpc.RangeRequest(key=b"\0", count_only=True),
                timeout=self.timeout_s,
                metadata=self._raw.metadata,
            )
        return int(response.header.revision)

    # -- writes -----------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write ``value``; with ``lease`` the key is deleted when the lease ends. Returns the
        revision of the write."""
        with _translated():
            raw = await self._open().put(key.encode(), value, lease=lease or None)
        return int(raw.header.revision)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; False when it did not exist."""
        with _translated():
            return await self._open().delete(key.encode()) is not None

    async def put_if_absent(
        self, key: str, value: bytes, *, lease: int = 0
    ) -> tuple[bool, KeyValue]:
        """Create ``key`` unless it exists, in one transaction. Returns whether this call
        created it and the key as it now is. Retrying after a lost answer is safe: the retry
        finds the key and reports ``False`` with the same create revision."""
        tx = self._raw.transactions
        k = key.encode()
        with _translated():
            created, responses = await self._open().transaction(
                compare=[tx.create(k) == 0],
                success=[tx.put(k, value, lease=lease or None), tx.get(k)],
                failure=[tx.get(k)],
            )
        rows = responses[-1]
        if not rows:
            # Deleted between the compare and the read inside one transaction cannot happen;
            # an empty read means etcd broke its own atomicity.
            raise EtcdError(f"etcd transaction on {key!r} returned no key")
        return bool(created), _kv(rows[0][1])

    async def put_if_create_revision(
        self, key: str, value: bytes, create_revision: int, *, lease: int = 0
    ) -> bool:
        """Overwrite ``key`` only if it is still the incarnation created at
        ``create_revision``; False (and no write) otherwise."""
        tx = self._raw.transactions
        k = key.encode()
        with _translated():
            ok, _ = await self._open().transaction(
                compare=[tx.create(k) == create_revision],
                success=[tx.put(k, value, lease=lease or None)],
                failure=[],
            )
        return bool(ok)

    async def delete_if_create_revision(self, key: str, create_revision: int) -> bool:
        """Delete ``key`` only if it is still the incarnation created at ``create_revision``."""
        tx = self._raw.transactions
        k = key.encode()
        with _translated():
            ok, _ = await self._open().transaction(
                compare=[tx.create(k) == create_revision],
                success=[tx.delete(k)],
                failure=[],
            )
        return bool(ok)

    async def write_batch(
        self,
        puts: Sequence[tuple[str, bytes]] = (),
        delete_prefixes: Sequence[str] = (),
        deletes: Sequence[str] = (),
        *,
        only_if_created: tuple[str, int] | None = None,
    ) -> bool:
        """Apply puts and deletes (single keys, and every key under each prefix) in one
        unconditional transaction: all or nothing, one disk sync.

        etcd refuses a transaction with more than ``--max-txn-ops`` operations (128 by default),
        larger than ``--max-request-bytes`` (1.5 MiB by default), or that touches one key twice:
        the caller sizes batches (the journal does). Not idempotent for deletes' return values,
        but repeating the same batch leaves the same state, so a retry after a lost answer is
        safe.

        ``only_if_created=(key, create_revision)`` fences the batch: it is applied only while
        that key is still the incarnation created at that revision (a leader's key and its
        epoch), so a deposed leader that has not noticed yet writes nothing. Returns False when
        the fence refused the batch (nothing written), True otherwise."""
        tx = self._raw.transactions
        ops: list[Any] = [tx.put(k.encode(), v) for k, v in puts]
        ops.extend(tx.delete(k.encode()) for k in deletes)
        for prefix in delete_prefixes:
            p = prefix.encode()
            ops.append(tx.delete(p, range_end=aetcd.utils.prefix_range_end(p)))
        if not ops:
            return True
        compare = []
        if only_if_created is not None:
            compare.append(tx.create(only_if_created[0].encode()) == only_if_created[1])
        with _translated():
            applied, _ = await self._open().transaction(compare=compare, success=ops, failure=[])
        return bool(applied)

    # -- leases (use Session, which keeps them alive) ----------------------------------------

    async def grant_lease(self, ttl_s: int) -> tuple[int, int]:
        """A new lease; returns ``(lease_id, granted_ttl_s)``. etcd may raise the TTL to its
        minimum (1.5 x its election timeout, rounded up)."""
        with _translated():
            lease = await self._open().lease(ttl_s)
        return int(lease.id), int(lease.ttl)

    async def refresh_lease(self, lease_id: int) -> int:
        """One keepalive round trip; returns the lease's new TTL in seconds, <= 0 when etcd no
        longer has the lease (expired or revoked)."""
        with _translated():
            reply = await self._open().refresh_lease(lease_id)
        if reply is None:
            raise EtcdUnavailable("etcd closed the keepalive stream without an answer")
        return int(reply.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        """End a lease now: etcd deletes every key attached to it."""
        with _translated():
            await self._open().revoke_lease(lease_id)

    async def lease_time_to_live(self, lease_id: int) -> tuple[int, int]:
        """One round trip; returns ``(remaining_s, granted_s)`` of a lease, in whole seconds.

        etcd truncates: ``remaining_s`` r means between r and r + 1 seconds are left (a lease
        refreshed a moment ago reads ``granted_s - 1``). ``remaining_s`` is -1 when etcd no
        longer has the lease (expired or revoked)."""
        with _translated():
            reply = await self._open().get_lease_info(lease_id, keys=False)
        return int(reply.TTL), int(reply.grantedTTL)

    # -- watches ----------------------------------------------------------------------------

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int | None = None,
        *,
        on_disconnect: Callable[[EtcdError], None] | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Every change under ``prefix`` from ``start_revision`` on, in revision order, each
        exactly once, across etcd restarts. ``None`` means from the revision current when the
        iterator is first advanced (not when this is called): to miss nothing, pass a range
        read's ``revision + 1``.

        Blocks between events; never ends by itself. When etcd goes away the watch re-watches
        from the last delivered revision + 1 with backoff (0.05 s doubling to 1 s), calling
        ``on_disconnect`` each time; events etcd committed meanwhile are replayed from its
        history. Raises ``WatchCompacted`` when that history is gone (re-read, then watch
        again). Cancel the consuming task, or ``aclose()`` the iterator, to stop it.
        """
        return self._watch(prefix.encode(), True, start_revision, on_disconnect)

    def watch_key(
        self,
        key: str,
        start_revision: int | None = None,
        *,
        on_disconnect: Callable[[EtcdError], None] | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Like ``watch_prefix`` for exactly one key."""
        return self._watch(key.encode(), False, start_revision, on_disconnect)

    async def _watch(
        self,
        key: bytes,
        is_prefix: bool,
        start_revision: int | None,
        on_disconnect: Callable[[EtcdError], None] | None,
    ) -> AsyncGenerator[WatchEvent, None]:
        backoff = _backoff()
        next_revision = start_revision
        while True:
            try:
                if next_revision is None:
                    next_revision = await self.current_revision() + 1
                inner = self._watch_once(key, is_prefix, next_revision)
                async with contextlib.aclosing(inner):
                    async for event in inner:
                        # etcd never splits one revision's events across watch responses (without
                        # `fragment`), and aetcd queues a whole response before any error, so
                        # resuming at the next revision loses nothing and repeats nothing.
                        next_revision = event.mod_revision + 1
                        backoff.reset()
                        yield event
            except WatchCompacted as e:
                raise WatchCompacted(next_revision or 0, e.compacted_revision) from e
            except EtcdUnavailable as e:
                if on_disconnect is not None:
                    on_disconnect(e)
                delay = backoff.delay()
                log.info(
                    "etcd watch on %r interrupted (%s); resuming at revision %s in %.2f s",
                    key,
                    e,
                    next_revision,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _watch_once(
        self, key: bytes, is_prefix: bool, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        """One aetcd watch; ends only by raising (or by being closed)."""
        if is_prefix:
            creating = asyncio.ensure_future(
                self._open().watch_prefix(key, start_revision=start_revision)
            )
        else:
            creating = asyncio.ensure_future(self._open().watch(key, start_revision=start_revision))
        try:
            # aetcd creates a watch under asyncio.wait_for, which on Python 3.11 swallows a
            # cancellation that arrives as the watch is created: await it from here, where a
            # cancellation always propagates, and drop a watch that gets created regardless.
            await asyncio.wait([creating])
        except asyncio.CancelledError:
            creating.cancel()
            creating.add_done_callback(_cancel_orphan_watch)
            raise
        with _translated():
            watch = creating.result()
        events = watch.__aiter__()
        try:
            while True:
                try:
                    raw = await events.__anext__()
                except StopAsyncIteration:
                    # aetcd ends the iterator when the client closes, or when the server
                    # cancels the watch: the latter is a disconnection to resume from.
                    self._open()
                    raise EtcdUnavailable("etcd ended the watch") from None
                except _ERRORS as e:
                    raise _translate(e) from e
                yield _event(raw)
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await watch.cancel()


_orphans: set[asyncio.Task[None]] = set()
"""Cancellations of watches created after their consumer went away, held until they run."""


def _cancel_orphan_watch(creating: asyncio.Future[Any]) -> None:
    if creating.cancelled() or creating.exception() is not None:
        return
    task = asyncio.get_running_loop().create_task(_cancel_quietly(creating.result()))
    _orphans.add(task)
    task.add_done_callback(_orphans.discard)


async def _cancel_quietly(watch: Any) -> None:
    with contextlib.suppress(Exception):
        await watch.cancel()


async def retry_unavailable(
    request: Callable[[], Awaitable[T]], *, backoff: Backoff | None = None
) -> T:
    """Await ``request()`` until it does not raise ``EtcdUnavailable``, pausing with ``backoff``
    (default: 0.05 s doubling to 1 s).

    Retries forever: race it against something that ends (a session's loss, a deadline).
    Other errors propagate. Use only for requests that are safe to repeat."""
    backoff = backoff or _backoff()
    while True:
        try:
            return await request()
        except EtcdUnavailable as e:
            delay = backoff.delay()
            log.debug("etcd unavailable (%s); retrying in %.2f s", e, delay)
            await asyncio.sleep(delay)
