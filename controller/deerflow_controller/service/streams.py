"""How many WatchJob streams are open, per client host and overall, and how many bytes each
may have on its way to a reader (issue #17, finding 5).

A WatchJob stream queues nothing of its own: it reads the job's event log (``Job.events``)
at a cursor, so a reader that stops reading costs the controller only the one message being
written to it (gRPC holds a message until the HTTP/2 flow-control window lets it out) plus
that window. Two things bound that:

- the number of open streams, per client host and in all (``--max-watch-streams`` and
  ``--max-watch-streams-per-client``): one more is RESOURCE_EXHAUSTED with a sentence;
- the bytes of events in messages being written, all streams together: a stream builds its
  next message from what is left of ``--watch-buffer-bytes`` (at least ``MIN_MESSAGE_BYTES``
  and at most ``MAX_MESSAGE_BYTES``, and never less than the one event the message must
  carry), and gives it back once gRPC took the message.

So the events held for unread streams are at most ``watch_buffer_bytes`` plus
``max_watch_streams`` x ``MIN_MESSAGE_BYTES`` (plus one HTTP/2 window each, and the largest
output once per stream when outputs are larger than that), whatever the readers do; a good
reader gets smaller messages when many streams are stalled, never fewer events, in the log's
order (exactly once, as before). A reader that never reads keeps its place until it cancels:
the per-client limit confines that to the client doing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deerflow_controller.core.validation import quote
from deerflow_controller.service.credentials import Principal

MIN_MESSAGE_BYTES = 16 << 10
MAX_MESSAGE_BYTES = 4 << 20


class TooManyStreams(Exception):
    """One more stream would go over a limit; the message is the sentence for the client."""


def client_host(peer: str) -> str:
    """The host part of a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``,
    ``unix:/path``): streams are counted per host, as a client opens connections at will."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")] if "]" in rest else rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


def stream_owner(who: Principal | None) -> str | None:
    """Whose allowance a result stream counts against (the ``tenant`` of
    :meth:`WatchStreams.open`): the tenant of the caller's token, so that a tenant's clients
    share it wherever they run; an admin token's own; None without authentication (then the
    client host's)."""
    if who is None:
        return None
    return f"admin {who.name}" if who.admin else who.tenant


@dataclass
class WatchStreams:
    """The open WatchJob streams, counted per client host and in all."""

    max_streams: int
    max_per_client: int
    buffer_bytes: int
    per_client: dict[str, int] = field(default_factory=dict)
    total: int = 0
    outstanding: int = 0
    """Bytes of events in messages being written now, all streams together."""

    def open(self, peer: str, tenant: str | None = None) -> str:
        """Count one more stream from ``peer`` (or, with authentication, from ``tenant``: the
        tenant of the caller's token, wherever it connects from); returns the key to pass to
        :meth:`close`. Raises TooManyStreams (counting nothing) when it would go over a limit."""
        host = client_host(peer) if tenant is None else f"tenant:{tenant}"
        held = self.per_client.get(host, 0)
        if held >= self.max_per_client:
            who = "this client" if tenant is None else f"tenant {quote(tenant)}"
            raise TooManyStreams(
                f"{who} already has {held} WatchJob streams open (a Session stream and each of "
                f"its calls count one each), the limit per client "
                f"(--max-watch-streams-per-client {self.max_per_client}); close some, and retry "
                "when some end"
            )
        if self.total >= self.max_streams:
            raise TooManyStreams(
                f"the controller already has {self.total} WatchJob streams open, its limit "
                f"(--max-watch-streams {self.max_streams}); retry in a few seconds"
            )
        self.per_client[host] = held + 1
        self.total += 1
        return host

    def close(self, host: str) -> None:
        self.total -= 1
        left = self.per_client[host] - 1
        if left:
            self.per_client[host] = left
        else:
            del self.per_client[host]

    def message_bytes(self) -> int:
        """How many bytes of events one stream may put in its next message now: what is left
        of the buffer budget, at least ``MIN_MESSAGE_BYTES`` and at most ``MAX_MESSAGE_BYTES``.
        The stream charges what it built with :meth:`charge` and frees it with
        :meth:`release` once gRPC took the message."""
        left = self.buffer_bytes - self.outstanding
        return max(MIN_MESSAGE_BYTES, min(MAX_MESSAGE_BYTES, left))

    def charge(self, size: int) -> None:
        self.outstanding += size

    def release(self, size: int) -> None:
        self.outstanding -= size
