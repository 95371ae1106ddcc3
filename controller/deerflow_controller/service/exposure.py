"""Closed by default: a controller reachable from other hosts needs credentials.

:func:`exposure_problem` is the start-up rule: binding gRPC or HTTP to an address other than
loopback without ``--auth-file`` is refused unless ``--insecure`` is given; :func:`announce`
says, in one line at start-up, what the controller is open to.
"""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Only this machine can connect to ``host``: ``localhost`` or a loopback address. Any
    other name, and the wildcard addresses ("", 0.0.0.0, ::), count as reachable from outside."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposed(hosts: list[str]) -> list[str]:
    """The hosts of ``hosts`` that are not loopback."""
    return [h for h in hosts if not is_loopback(h)]


def exposure_problem(hosts: list[str], *, auth: bool, insecure: bool) -> str | None:
    """The one-line refusal when ``hosts`` (the gRPC host, and the HTTP host when HTTP is on)
    expose the controller without credentials and without ``--insecure``; else None."""
    outside = exposed(hosts)
    if auth or insecure or not outside:
        return None
    return (
        f"refusing to listen on {outside[0]!r} without credentials: pass --auth-file PATH "
        "(see docs/SECURITY.md), or --insecure to let anyone who can connect run and read jobs"
    )


def announce(hosts: list[str], *, auth: bool, insecure: bool) -> None:
    """One start-up line: authentication on (INFO), open on loopback (INFO), or open to the
    network under --insecure (WARNING)."""
    if auth:
        log.info("authentication on: every client and agent needs a token (--auth-file)")
    elif exposed(hosts):
        log.warning(
            "--insecure: no authentication on %s; anyone who can connect can join as an agent, "
            "read and cancel every job",
            ", ".join(exposed(hosts)),
        )
    else:
        log.info(
            "no authentication: listening on loopback only, open to every process on this "
            "machine (pass --auth-file to require tokens)"
        )
