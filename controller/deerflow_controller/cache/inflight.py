"""In-flight dedup: identical cacheable tasks submitted while one runs wait for its result.

The first task with a key is the *leader*; later ones with the same key are *followers*. When
the leader succeeds every follower gets the result under its own task id; when it fails (or is
cancelled) the followers are released and must be treated as new requests (the first of them to
call ``attach`` again becomes the next leader), so one failure never fails the others."""

from __future__ import annotations

from dataclasses import dataclass, field

TaskRef = tuple[str, str]
"""(job_id, task_id): how the scheduler names a task to the cache."""


@dataclass(slots=True)
class Flight:
    leader: TaskRef
    followers: list[TaskRef] = field(default_factory=list)


class InflightTable:
    __slots__ = ("_flights", "attached", "released")

    def __init__(self) -> None:
        self._flights: dict[bytes, Flight] = {}
        self.attached = 0
        """Followers attached so far (each one a run saved if the leader succeeds)."""
        self.released = 0
        """Followers released by a failed leader."""

    def __len__(self) -> int:
        return len(self._flights)

    def attach(self, digest: bytes, task: TaskRef) -> TaskRef | None:
        """Make ``task`` the leader for ``digest`` (returns None: run it) or a follower of the
        running leader (returns the leader: do not run it, wait). Re-attaching the leader
        itself (a retry) returns None and changes nothing."""
        flight = self._flights.get(digest)
        if flight is None:
            self._flights[digest] = Flight(task)
            return None
        if flight.leader == task:
            return None
        if task not in flight.followers:
            flight.followers.append(task)
            self.attached += 1
        return flight.leader

    def leader(self, digest: bytes) -> TaskRef | None:
        flight = self._flights.get(digest)
        return flight.leader if flight is not None else None

    def complete(self, digest: bytes) -> list[TaskRef]:
        """The leader succeeded: forget the flight, return the followers to answer."""
        flight = self._flights.pop(digest, None)
        return flight.followers if flight is not None else []

    def fail(self, digest: bytes) -> list[TaskRef]:
        """The leader failed for good or was cancelled: forget the flight, return the
        followers to release (run them as if newly submitted)."""
        flight = self._flights.pop(digest, None)
        if flight is None:
            return []
        self.released += len(flight.followers)
        return flight.followers

    def detach(self, digest: bytes, task: TaskRef) -> None:
        """A follower was cancelled: stop waiting for it. (Cancel a leader with ``fail``.)"""
        flight = self._flights.get(digest)
        if flight is not None and task in flight.followers:
            flight.followers.remove(task)
