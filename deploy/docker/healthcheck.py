"""The image's HEALTHCHECK: exit 0 when a daemon answers, 1 (with one line on stderr) when not.

Standard library only, so it needs neither curl nor the daemons' imports. What it checks:

- ``http://`` or ``https://`` URL (argument, else ``$DEERFLOW_HEALTH_URL``, else the controller's
  ``http://127.0.0.1:7401/healthz``): a 200 answer. For https it verifies the server with
  ``$DEERFLOW_TLS_CA`` when set (no host-name check: 127.0.0.1 is the caller here) and presents
  ``$DEERFLOW_TLS_CERT``/``$DEERFLOW_TLS_KEY`` when set (a controller under mutual TLS).
- ``tcp://host:port``: the port accepts a connection (the provider simulator has no /healthz).
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import urllib.request
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:7401/healthz"


def _tls_context() -> ssl.SSLContext:
    ca = os.environ.get("DEERFLOW_TLS_CA", "")
    ctx = ssl.create_default_context(cafile=ca or None)
    ctx.check_hostname = False
    if not ca:
        ctx.verify_mode = ssl.CERT_NONE
    cert = os.environ.get("DEERFLOW_TLS_CERT", "")
    if cert:
        ctx.load_cert_chain(cert, os.environ.get("DEERFLOW_TLS_KEY") or None)
    return ctx


def check(url: str, timeout_s: float = 3.0) -> str | None:
    """None when healthy, else the reason in one line."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "tcp":
            with socket.create_connection((parts.hostname or "", parts.port or 0), timeout_s):
                return None
        if parts.scheme not in ("http", "https"):
            return f"unsupported scheme {parts.scheme!r}: use http, https or tcp"
        ctx = _tls_context() if parts.scheme == "https" else None
        with urllib.request.urlopen(url, timeout=timeout_s, context=ctx) as answer:
            status = int(answer.status)
        return None if status == 200 else f"answered {status}"
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("DEERFLOW_HEALTH_URL", DEFAULT_URL)
    reason = check(url)
    if reason is None:
        return 0
    print(f"unhealthy: {url}: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
