"""Configuration of the etcd-backed high-availability mode (``--etcd``)."""

from __future__ import annotations

from dataclasses import dataclass

from deerflow_common.etcd import DEFAULT_PREFIX


@dataclass(frozen=True, slots=True)
class HaConfig:
    """Leader election, agent membership and the journal. Absent (None) in embedded mode."""

    endpoints: tuple[str, ...]
    """etcd client endpoints (host:port), the members of one etcd cluster: the first reachable
    one is used, and another when it fails."""

    prefix: str = DEFAULT_PREFIX
    """Key prefix of this cluster (``--etcd-prefix``); several clusters may share an etcd."""

    lease_ttl_s: int = 3
    """TTL of the controller's lease (``--lease-ttl``). A dead leader is replaced about this
    long after it died, so it bounds failover; three seconds keeps failover under five with
    the restore and the agents' reconnect, and still rides out a one-second etcd hiccup (the
    keepalive refreshes every TTL/3)."""

    reconnect_grace_s: float = 2.0
    """After taking over, how long a new leader waits for the agents etcd lists to reconnect
    before it runs their unfinished work elsewhere. Ends early once they are all back: agents
    follow the leader key and reconnect within a round trip of the election."""

    agent_lease_grace_s: float = 1.0
    """An agent whose lease expired while its stream still looks alive is dead after this much
    longer (unless it registers again): the stream is closed and its attempts run elsewhere."""

    journal_max_payload_bytes: int = 1 << 20
    """Largest journal record (``--journal-max-payload-bytes``): a job as submitted, or one
    chunk of results. etcd refuses requests over its ``--max-request-bytes`` (1.5 MiB by
    default), so keep this below that; bigger jobs are refused with RESOURCE_EXHAUSTED."""

    delivered_retention_s: float = 5.0
    """A job's journal entries are deleted this long after a client received its last result
    (a short margin for a client that re-attaches at that very moment); undelivered jobs go
    ``job_retention_s`` after they finished. Both deadlines are journaled with the job, so a
    new leader keeps them (and deletes at once a job whose deadline passed) instead of
    restarting them."""

    etcd_timeout_s: float = 2.0
    """Deadline of each etcd request; a slower etcd counts as unavailable and is retried."""

    advertise: str = ""
    """The address agents and clients are told to use for this controller (defaults to the
    listening host:port)."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("give at least one etcd endpoint (host:port)")
        if self.lease_ttl_s < 1:
            raise ValueError(f"the lease TTL must be at least 1 s, got {self.lease_ttl_s}")
        if self.journal_max_payload_bytes < 1024:
            raise ValueError("the journal's record limit must be at least 1024 bytes")
