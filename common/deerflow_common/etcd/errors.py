"""Named errors of the etcd layer. Callers catch these, never aetcd's or gRPC's own."""

from __future__ import annotations


class EtcdError(Exception):
    """An etcd request failed in a way that retrying the same request will not fix."""


class EtcdUnavailable(EtcdError):
    """etcd could not be reached or did not answer in time. Safe to retry with backoff."""


class WatchCompacted(EtcdError):
    """A watch asked for history etcd has already compacted away.

    The watcher missed events it cannot get back: read the current state again (a range read)
    and watch on from that read's revision + 1."""

    def __init__(self, requested_revision: int, compacted_revision: int) -> None:
        self.requested_revision = requested_revision
        self.compacted_revision = compacted_revision
        super().__init__(
            f"etcd compacted its history up to revision {compacted_revision}, so a watch from "
            f"revision {requested_revision} cannot resume: re-read the state and watch again"
        )


class SessionLost(EtcdError):
    """The session's lease expired, was revoked, or could not be kept alive before its deadline.

    Everything attached to the lease (candidate key, agent record) is gone or about to be.
    Start a new ``Session``; never keep acting on the old one."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"etcd session lost: {reason}")


class NotLeader(EtcdError):
    """An action that needs leadership was asked of a candidate that does not (or no longer)
    lead: its key is gone, its session is lost, or it resigned."""
