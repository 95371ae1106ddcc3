"""etcd for deerflow-parallel: key layout, client, sessions, leader election, membership.

Composed only from aetcd's public client, one small module per primitive, after etcd's own
``client/v3/concurrency``. Every blocking call's docstring says what blocks, what cancels, and
what happens when the session's lease is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..backoff import Backoff
from .endpoints import parse_endpoint, parse_endpoints
from .errors import EtcdError, EtcdUnavailable, NotLeader, SessionLost, WatchCompacted
from .keys import DEFAULT_PREFIX, Keys, validate_id
from .session import DEFAULT_TTL_S, Session

if TYPE_CHECKING:
    from .client import (
        EtcdClient,
        EventKind,
        KeyValue,
        Snapshot,
        WatchEvent,
        retry_unavailable,
    )
    from .election import Election, Leader, Leadership, current_leader, observe_leader
    from .membership import Member, MemberEvent, MemberEventKind, Membership, register
    from .server import LocalEtcd, find_etcd_binary

# The client and what is built on it import aetcd (and gRPC): loaded on first use, so embedded
# mode, which names only keys and endpoints, starts without them.
_LAZY = {
    **dict.fromkeys(
        ("EtcdClient", "EventKind", "KeyValue", "Snapshot", "WatchEvent", "retry_unavailable"),
        "client",
    ),
    **dict.fromkeys(
        ("Election", "Leader", "Leadership", "current_leader", "observe_leader"), "election"
    ),
    **dict.fromkeys(
        ("Member", "MemberEvent", "MemberEventKind", "Membership", "register"), "membership"
    ),
    **dict.fromkeys(("LocalEtcd", "find_etcd_binary"), "server"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TTL_S",
    "Backoff",
    "Election",
    "EtcdClient",
    "EtcdError",
    "EtcdUnavailable",
    "EventKind",
    "KeyValue",
    "Keys",
    "Leader",
    "Leadership",
    "LocalEtcd",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "Membership",
    "NotLeader",
    "Session",
    "SessionLost",
    "Snapshot",
    "WatchCompacted",
    "WatchEvent",
    "current_leader",
    "find_etcd_binary",
    "observe_leader",
    "parse_endpoint",
    "parse_endpoints",
    "register",
    "retry_unavailable",
    "validate_id",
]
