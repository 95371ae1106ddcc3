"""Which addresses the agent connects to for a URL that a task names: :class:`AddressPolicy`.

A task's payload is untrusted input, and the agent sits inside the operator's network. Without a
policy, ``{"url": "http://169.254.169.254/latest/meta-data/"}`` would hand a submitter the cloud
credentials of the node, and ``http://127.0.0.1:2379/`` the cluster's etcd. So URLs from
payloads (the ``http`` handler's ``url``, a provider handler's payload ``base_url``) go through a
session whose every socket is checked against the policy *at connect time*, on the address
actually connected to: names resolved by DNS, IP literals and redirects alike, so a name that
resolves to an allowed address first and a forbidden one later (DNS rebinding) gains nothing.

Refused unless allowed: loopback, link-local (and the cloud metadata addresses in it),
unspecified, private (RFC 1918, unique-local IPv6, carrier-grade NAT), multicast and reserved
ranges; IPv6 addresses that carry an IPv4 address (mapped, NAT64, 6to4) are judged as it. The
operator allows networks with ``--http-allow`` (``DEERFLOW_HTTP_ALLOW``): an address inside any
allowed network is reached whatever its range. URLs the operator configured (a provider's
``DEERFLOW_*_BASE_URL``) are trusted and not checked.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALLOW_ENV",
    "ALLOW_FLAG",
    "STRICT",
    "AddressPolicy",
    "AddressRefused",
    "refusal_sentence",
]

ALLOW_FLAG = "--http-allow"
ALLOW_ENV = "DEERFLOW_HTTP_ALLOW"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2/32",  # AWS ECS task credentials
        "fd00:ec2::254/128",  # AWS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
    )
)
_RANGES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("cloud metadata", _METADATA),
    ("loopback", tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128"))),
    ("link-local", tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10"))),
    ("unspecified", tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "::/128"))),
    (
        "private",
        tuple(
            ipaddress.ip_network(n)
            for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
        ),
    ),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
"""Names of metadata services, refused before any lookup (off the cloud they do not resolve)."""


class AddressRefused(OSError):
    """Raised by the guarded sessions' socket factory: the address is not allowed.

    Its text is the same for every address, so that when every address of a name is refused
    aiohttp reports this exception itself (not a merged one); ``address`` and ``why`` say which."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(errno.EACCES, "refused by the agent's HTTP address policy")
        self.address = address
        self.why = why


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Networks the operator allows on top of the public internet. Immutable and hashable: the
    agent keeps one connection pool per policy."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> AddressPolicy:
        """From ``"127.0.0.1/32,10.0.0.0/8"`` (or a list of such entries; a bare address means
        just that address). Raises ValueError with a sentence naming the bad entry."""
        items = entries.split(",") if isinstance(entries, str) else list(entries)
        allow: list[IPNetwork] = []
        for raw in items:
            item = raw.strip()
            if not item:
                continue
            try:
                allow.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                shown = item if len(item) <= 60 else item[:57] + "..."
                raise ValueError(
                    f"{shown!r} is not an IP network; give addresses or CIDR networks separated "
                    "by commas, for example 127.0.0.1/32,10.0.0.0/8"
                ) from None
        return cls(tuple(allow))

    def allows(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.allow)

    def why_refused(self, address: str) -> str | None:
        """Which forbidden range ``address`` (an IP literal) is in, or None when it may be
        reached (public, or allowed). A text that is not an IP address is refused as
        "unparsable"."""
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "unparsable"
        if isinstance(ip, ipaddress.IPv6Address):
            # IPv6 forms that carry an IPv4 address are judged as that address.
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            elif ip in _NAT64:
                ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            elif ip.sixtofour is not None:
                ip = ip.sixtofour
        if self.allows(ip):
            return None
        for name, networks in _RANGES:
            if any(ip.version == n.version and ip in n for n in networks):
                return name
        if ip.is_multicast or ip.is_reserved or ip.is_private:
            return "reserved"
        return None

    def why_refused_host(self, host: str) -> str | None:
        """Like :meth:`why_refused` for a URL's host before any lookup: an IP literal is
        judged at once, a metadata service's name is refused; other names are judged when
        connecting (None here)."""
        bare = host.strip("[]").rstrip(".").lower()
        if bare in METADATA_HOSTS:
            return "cloud metadata"
        try:
            ipaddress.ip_address(bare.split("%", 1)[0])
        except ValueError:
            return None
        return self.why_refused(bare)

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's ``socket_factory``: called with every address a connection is about to
        be made to (a ``getaddrinfo`` tuple: family, type, proto, canonname, sockaddr);
        raises :class:`AddressRefused` for a forbidden one."""
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        why = self.why_refused(address)
        if why is not None:
            raise AddressRefused(address, why)
        return socket.socket(family=family, type=type_, proto=proto)


STRICT = AddressPolicy()
"""The default: nothing allowed beyond public addresses."""


def refusal_sentence(what: str, address: str, why: str) -> str:
    """One sentence for a refused URL, naming the setting that allows it."""
    single = "/128" if ":" in address else "/32"
    return (
        f"{what} leads to {address}, {'an' if why[0] in 'aeiou' else 'a'} {why} address that "
        f"the agent does not reach for a task's URL; an operator can allow it with "
        f"{ALLOW_FLAG} {address}{single} (env {ALLOW_ENV})"
    )
