"""How an agent connects and how much it runs at once (:class:`AgentConfig`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from deerflow_common.tls import TlsFiles

from ._netpolicy import AddressPolicy

__all__ = ["AgentConfig"]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """How an agent connects and how much it runs at once."""

    controllers: tuple[str, ...] = ("127.0.0.1:7400",)
    """host:port of each controller; the agent rotates through them until one welcomes it."""

    agent_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """Unique per running agent; hostname-pid by default, so a restarted agent is a new one."""

    slots: int = 16
    """Concurrent attempts on this agent across all handlers."""

    cpu_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Processes in the cpu-handler pool (created on the first cpu attempt)."""

    handler_slots: Mapping[str, int] = field(default_factory=dict)
    """Per-handler caps on concurrent attempts on this agent (``--handler-slots llm=3``); they
    override the handlers' own caps and are reported in Hello. Empty: each handler's own cap."""

    labels: Mapping[str, str] = field(default_factory=dict)
    """Free-form key/values the controller matches against a task's labels."""

    http_allow: tuple[str, ...] = ()
    """Networks (CIDR, or single addresses) that URLs in task payloads may lead to besides
    public addresses (``--http-allow``/``DEERFLOW_HTTP_ALLOW``). Empty, the default, refuses
    loopback, link-local, cloud metadata, private and reserved addresses: see
    :mod:`deerflow_agent._netpolicy` and docs/SECURITY.md."""

    token: str = ""
    """The join token (`--join-token-file`, `$DEERFLOW_JOIN_TOKEN`): sent as `authorization:
    Bearer` metadata on the stream and on FetchInput, for controllers that authenticate agents."""

    tls: TlsFiles | None = None
    """TLS to the controller (``--tls-ca``, ``--tls-cert``/``--tls-key`` for mutual TLS); the
    files are read at each connection. None: plaintext."""

    welcome_timeout_s: float = 10.0
    """How long to wait for Welcome after Hello before trying again."""

    backoff_initial_s: float = 0.1
    """First reconnect delay; doubles per failed attempt, with jitter."""

    backoff_max_s: float = 5.0
    """Cap on the reconnect delay: a restarted controller is found within seconds."""

    drain_delivery_timeout_s: float = 10.0
    """While draining with nothing left to run, how long to keep trying to deliver buffered
    results to an unreachable controller before exiting (it reruns those tasks anyway)."""

    close_timeout_s: float = 5.0
    """After a drain closes our side of the stream, how long to wait for the controller's end."""

    def __post_init__(self) -> None:
        if not self.controllers or not all(self.controllers):
            raise ValueError("at least one controller address (host:port) is required")
        if not self.agent_id:
            raise ValueError("the agent id must not be empty")
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, got {self.slots}")
        if self.cpu_workers < 1:
            raise ValueError(f"cpu_workers must be at least 1, got {self.cpu_workers}")
        AddressPolicy.parse(self.http_allow)  # raises ValueError naming a bad entry
