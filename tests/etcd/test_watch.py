"""Watches that survive etcd restarts: every event once, in revision order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from deerflow_common.etcd import (
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    EventKind,
    Keys,
    LocalEtcd,
    WatchCompacted,
    WatchEvent,
)

from .helpers import next_within


async def _put_when_etcd_answers(client: EtcdClient, key: str, value: bytes) -> int:
    """Put, retrying while etcd restarts (each attempt is bounded by the client's timeout)."""
    async with asyncio.timeout(15):
        while True:
            try:
                return await client.put(key, value)
            except EtcdUnavailable:
                await asyncio.sleep(0.05)


async def test_a_watch_survives_an_etcd_restart_and_misses_no_event(
    restartable_etcd: LocalEtcd, keys: Keys
) -> None:
    async with (
        EtcdClient(restartable_etcd.endpoint, timeout_s=2) as writer,
        EtcdClient(restartable_etcd.endpoint, timeout_s=2) as watcher,
    ):
        prefix = keys.agents_prefix
        start = await watcher.current_revision() + 1
        disconnects: list[EtcdError] = []
        events = watcher.watch_prefix(prefix, start, on_disconnect=disconnects.append)
        async with contextlib.aclosing(events):
            written = [await writer.put(f"{prefix}before-{i}", b"%d" % i) for i in range(5)]
            seen = [await next_within(events, 5) for _ in range(5)]

            # Stop etcd while the watch is open; nothing can be written while it is down.
            await asyncio.to_thread(restartable_etcd.stop)
            pending = asyncio.ensure_future(anext(events))
            await asyncio.to_thread(restartable_etcd.start)
            for i in range(5):
                written.append(await _put_when_etcd_answers(writer, f"{prefix}after-{i}", b"x"))
            seen.append(await asyncio.wait_for(pending, 10))
            seen += [await next_within(events, 10) for _ in range(4)]

            assert disconnects, "the watch must have lost its stream and come back"
            assert [e.key for e in seen] == [f"{prefix}before-{i}" for i in range(5)] + [
                f"{prefix}after-{i}" for i in range(5)
            ]
            assert [e.mod_revision for e in seen] == written, "each once, in revision order"
            assert all(e.kind is EventKind.PUT for e in seen)
            # And nothing more: a duplicate would show up as an eleventh event.
            extra: asyncio.Future[WatchEvent] = asyncio.ensure_future(anext(events))
            await writer.delete(f"{prefix}before-0")
            last = await asyncio.wait_for(extra, 5)
            assert (last.kind, last.key) == (EventKind.DELETE, f"{prefix}before-0")


async def test_a_watch_from_a_compacted_revision_raises_watch_compacted(
    client: EtcdClient, keys: Keys
) -> None:
    first = await client.put(keys.prefix + "k", b"1")
    latest = await client.put(keys.prefix + "k", b"2")
    await client.raw.compact(latest)
    events = client.watch_prefix(keys.prefix, first)
    with pytest.raises(WatchCompacted) as raised:
        await next_within(events, 5)
    assert raised.value.requested_revision == first
    assert raised.value.compacted_revision >= latest


async def test_a_watch_from_a_past_revision_replays_what_happened_since(
    client: EtcdClient, keys: Keys
) -> None:
    created = await client.put(keys.prefix + "a", b"1")
    await client.put(keys.prefix + "b", b"2")
    await client.delete(keys.prefix + "a")
    async with contextlib.aclosing(client.watch_prefix(keys.prefix, created)) as events:
        replay = [await next_within(events, 5) for _ in range(3)]
    assert [(e.kind, e.key, e.value) for e in replay] == [
        (EventKind.PUT, keys.prefix + "a", b"1"),
        (EventKind.PUT, keys.prefix + "b", b"2"),
        (EventKind.DELETE, keys.prefix + "a", b""),
    ]
    assert replay[0].create_revision == replay[0].mod_revision == created
    assert replay[2].create_revision == 0


async def test_a_watch_ends_with_an_error_when_its_client_is_closed(
    make_client: Callable[..., EtcdClient], keys: Keys
) -> None:
    client = make_client()
    events = client.watch_prefix(keys.prefix, await client.current_revision() + 1)
    pending = asyncio.ensure_future(anext(events))
    await client.put(keys.prefix + "first", b"1")
    assert (await asyncio.wait_for(pending, 5)).key == keys.prefix + "first"
    pending = asyncio.ensure_future(anext(events))
    await client.close()
    with pytest.raises(EtcdError, match="closed"):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(EtcdError, match="closed"):
        await client.get(keys.prefix + "first")
