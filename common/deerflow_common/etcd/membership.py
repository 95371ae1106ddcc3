"""Who is alive: records attached to session leases, and a watch over them.

An agent ``register``s a JSON record under ``agents/<id>`` attached to its session's lease.
The record lives exactly as long as the lease: when the agent's process dies (or is cut off for
longer than its TTL), etcd deletes the key and every watcher sees the member leave. The
controller follows the prefix with ``Membership.watch()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .client import EtcdClient, EventKind, KeyValue, WatchEvent, retry_unavailable
from .errors import WatchCompacted
from .keys import Keys
from .session import Session

log = logging.getLogger(__name__)


async def register(session: Session, keys: Keys, agent_id: str, info: Mapping[str, Any]) -> int:
    """Put the agent's record (``info`` as JSON: address, handlers, labels, capacity) under
    ``agents/<agent_id>``, attached to ``session``'s lease. Returns the revision of the write.

    One round trip. Registering again replaces the record (and moves it to this session's
    lease). Raises ``SessionLost`` if the session is already lost; when it is lost later, the
    record disappears with the lease: register again with a new session.
    """
    session.check()
    return await session.client.put(keys.agent(agent_id), _encode(info), lease=session.lease_id)


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    info: dict[str, Any]
    lease: int
    create_revision: int
    """Revision at which this incarnation of the record was created."""


class MemberEventKind(Enum):
    JOINED = "joined"
    UPDATED = "updated"
    """The record was re-registered: new info, or a new lease."""
    LEFT = "left"
    """The record was deleted: lease expired or revoked, or deleted by hand."""


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: MemberEventKind
    member: Member
    """For ``LEFT``: the record as it was last seen."""
    revision: int
    """etcd revision of the change (of the read, for changes found by a resync)."""


class Membership:
    """The members registered under one prefix (``Membership.agents(client, keys)``)."""

    def __init__(self, client: EtcdClient, prefix: str, parse_id: Callable[[str], str]) -> None:
        self._client = client
        self._prefix = prefix
        self._parse_id = parse_id

    @classmethod
    def agents(cls, client: EtcdClient, keys: Keys) -> Membership:
        return cls(client, keys.agents_prefix, keys.agent_id)

    @classmethod
    def controllers(cls, client: EtcdClient, keys: Keys) -> Membership:
        return cls(client, keys.controllers_prefix, keys.controller_id)

    async def members(self) -> dict[str, Member]:
        """The members now, by id. One round trip."""
        snapshot = await self._client.get_prefix(self._prefix)
        return self._parse_all(snapshot.kvs)

    async def watch(self) -> AsyncGenerator[MemberEvent, None]:
        """``JOINED`` for every member present now (sorted by id), then every join, update and
        leave as it happens, in revision order, each once.

        Blocks between changes; never ends by itself. Survives etcd restarts (the watch resumes
        where it stopped) and compactions (it re-reads the prefix and reports the difference).
        A lease expiry shows as ``LEFT``. Records that are not valid JSON objects are logged
        and skipped. Cancel the consumer or ``aclose()`` to stop.
        """
        known: dict[str, Member] = {}
        while True:
            snapshot = await retry_unavailable(lambda: self._client.get_prefix(self._prefix))
            now = self._parse_all(snapshot.kvs)
            for event in _difference(known, now, snapshot.revision):
                yield event
            known = now
            with contextlib.suppress(WatchCompacted):
                watch = self._client.watch_prefix(self._prefix, snapshot.revision + 1)
                async with contextlib.aclosing(watch):
                    async for change in watch:
                        applied = self._apply(known, change)
                        if applied is not None:
                            yield applied
            log.info("membership watch on %r resyncing after a compaction", self._prefix)

    # -- internals ------------------------------------------------------------------------------

    def _apply(self, known: dict[str, Member], change: WatchEvent) -> MemberEvent | None:
        if change.kind is EventKind.DELETE:
            member_id = self._id_or_none(change.key)
            gone = known.pop(member_id, None) if member_id is not None else None
            if gone is None:
                return None
            return MemberEvent(MemberEventKind.LEFT, gone, change.mod_revision)
        member = self._parse(
            KeyValue(
                change.key,
                change.value,
                change.create_revision,
                change.mod_revision,
                0,
                change.lease,
            )
        )
        if member is None:
            return None
        before = known.get(member.member_id)
        known[member.member_id] = member
        if before is None:
            return MemberEvent(MemberEventKind.JOINED, member, change.mod_revision)
        if before == member:
            return None
        return MemberEvent(MemberEventKind.UPDATED, member, change.mod_revision)

    def _parse_all(self, kvs: Iterable[KeyValue]) -> dict[str, Member]:
        members = (self._parse(kv) for kv in kvs)
        return {m.member_id: m for m in members if m is not None}

    def _id_or_none(self, key: str) -> str | None:
        try:
            return self._parse_id(key)
        except ValueError:
            return None

    def _parse(self, kv: KeyValue) -> Member | None:
        member_id = self._id_or_none(kv.key)
        if member_id is None:
            log.warning("ignoring %r: not a member key under %r", kv.key, self._prefix)
            return None
        try:
            info = json.loads(kv.value)
        except ValueError:
            info = None
        if not isinstance(info, dict):
            log.warning("ignoring member %r: its record is not a JSON object", member_id)
            return None
        return Member(member_id, info, kv.lease, kv.create_revision)


def _difference(
    before: Mapping[str, Member], after: Mapping[str, Member], revision: int
) -> list[MemberEvent]:
    events = [
        MemberEvent(MemberEventKind.LEFT, before[mid], revision)
        for mid in sorted(before.keys() - after.keys())
    ]
    for mid in sorted(after):
        old = before.get(mid)
        if old is None:
            events.append(MemberEvent(MemberEventKind.JOINED, after[mid], revision))
        elif old != after[mid]:
            events.append(MemberEvent(MemberEventKind.UPDATED, after[mid], revision))
    return events


def _encode(info: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(dict(info), sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"a member record must be JSON-serialisable: {e}") from e
