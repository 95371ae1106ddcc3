"""Where etcd is: ``host:port`` endpoints, as given on the command line, into one gRPC target.

aetcd takes one host and port, so several endpoints (the members of an etcd cluster) become
gRPC's ``ipv4:``/``ipv6:`` address-list target, whose pick-first policy uses the first member it
can reach and moves to another when that one fails (as etcd's own clients do).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

__all__ = ["grpc_target", "parse_endpoint", "parse_endpoints"]

log = logging.getLogger(__name__)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``http://host:port`` into ``(host, port)``."""
    rest = endpoint.removeprefix("http://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} must look like 'host:port'")
    return host, int(port)


def parse_endpoints(endpoints: str | Sequence[str]) -> list[tuple[str, int]]:
    """``host:port`` endpoints, given as a sequence or comma-separated, into ``(host, port)``
    pairs. Raises ValueError naming the bad one, or when there are none."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed = [parse_endpoint(e.strip()) for e in items if e.strip()]
    if not parsed:
        raise ValueError("give at least one etcd endpoint (host:port)")
    return parsed


def grpc_target(endpoints: Sequence[tuple[str, int]]) -> str:
    """One gRPC target for all of ``endpoints``: ``host:port`` for one; for several, every
    address they resolve to (now, once) in gRPC's ``ipv4:``/``ipv6:`` list form, whose
    pick-first policy tries them in order and moves on when the one in use fails. One address
    family per target (gRPC's rule): that of the first endpoint's first address; addresses of
    the other family are left out with a warning."""
    if len(endpoints) == 1:
        host, port = endpoints[0]
        return f"{host}:{port}"
    v4: list[str] = []
    v6: list[str] = []
    first_family: int | None = None
    for host, port in endpoints:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            log.warning("etcd endpoint %s:%d does not resolve (%s); left out", host, port, e)
            continue
        for family, _, _, _, sockaddr in infos:
            ip = sockaddr[0]
            if not isinstance(ip, str):
                continue
            if family == socket.AF_INET:
                address = f"{ip}:{port}"
                if address not in v4:
                    v4.append(address)
            elif family == socket.AF_INET6:
                address = f"[{ip}]:{port}"
                if address not in v6:
                    v6.append(address)
            else:
                continue
            if first_family is None:
                first_family = family
    if not v4 and not v6:
        raise ValueError(
            "none of the etcd endpoints resolves: " + ", ".join(f"{h}:{p}" for h, p in endpoints)
        )
    scheme, chosen, other = (
        ("ipv6", v6, v4) if first_family == socket.AF_INET6 else ("ipv4", v4, v6)
    )
    if other:
        log.warning("etcd endpoints of two address families: using only the %s ones", scheme)
    return f"{scheme}:{','.join(chosen)}"
