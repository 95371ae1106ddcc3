"""etcd for deerflow-parallel: key layout, client, sessions, leader election, membership.

Composed only from aetcd's public client, one small module per primitive, after etcd's own
``client/v3/concurrency``. Every blocking call's docstring says what blocks, what cancels, and
what happens when the session's lease is lost.
"""

from ..backoff import Backoff
from .client import (
    EtcdClient,
    EventKind,
    KeyValue,
    Snapshot,
    WatchEvent,
    retry_unavailable,
)
from .election import Election, Leader, Leadership, current_leader, observe_leader
from .endpoints import parse_endpoint, parse_endpoints
from .errors import EtcdError, EtcdUnavailable, NotLeader, SessionLost, WatchCompacted
from .keys import DEFAULT_PREFIX, Keys, validate_id
from .membership import Member, MemberEvent, MemberEventKind, Membership, register
from .server import LocalEtcd, find_etcd_binary
from .session import DEFAULT_TTL_S, Session

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
