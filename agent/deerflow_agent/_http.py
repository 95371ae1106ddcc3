"""The agent's HTTP client sessions, shared by every io handler that speaks HTTP.

Two kinds, per process (per event loop), created on first use and closed by
:func:`close_http_session` at shutdown; a session owns a connection pool, and one pool keeps TLS
connections to a provider warm across attempts instead of a handshake per attempt:

- :func:`client`, for URLs the operator configured (a provider's ``DEERFLOW_*_BASE_URL``);
- :func:`guarded_client`, one per :class:`AddressPolicy`, for URLs a task's payload names: every
  socket it opens is checked against the policy on the address it connects to (redirects
  included), and its pool never shares a connection with the trusted session.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from deerflow_common import signals

from ._netpolicy import AddressPolicy

if TYPE_CHECKING:  # imported on first use: an agent that makes no request never loads aiohttp
    import aiohttp

__all__ = [
    "client",
    "close_http_session",
    "decimal",
    "guarded_client",
    "response_signals",
    "retry_after_s",
]

_RATELIMIT_HEADERS = (
    ("x-ratelimit-limit-requests", signals.LIMIT_REQUESTS, False),
    ("x-ratelimit-remaining-requests", signals.REMAINING_REQUESTS, False),
    ("x-ratelimit-reset-requests", signals.RESET_REQUESTS_S, True),
    ("x-ratelimit-limit-tokens", signals.LIMIT_TOKENS, False),
    ("x-ratelimit-remaining-tokens", signals.REMAINING_TOKENS, False),
    ("x-ratelimit-reset-tokens", signals.RESET_TOKENS_S, True),
)

_session: aiohttp.ClientSession | None = None
_session_loop: asyncio.AbstractEventLoop | None = None
_guarded: dict[AddressPolicy, aiohttp.ClientSession] = {}
_guarded_loop: asyncio.AbstractEventLoop | None = None


def client() -> aiohttp.ClientSession:
    """The process's shared session, created on first use (on the running loop).

    Its connector has no connection limit (``limit=0``): the agent's slots already bound how many
    requests run at once, and a second, hidden cap here would queue attempts where no one sees.
    """
    import aiohttp

    global _session, _session_loop
    loop = asyncio.get_running_loop()
    if _session is None or _session.closed or _session_loop is not loop:
        _session = aiohttp.ClientSession(
            headers={"User-Agent": "deerflow-agent"}, connector=aiohttp.TCPConnector(limit=0)
        )
        _session_loop = loop
    return _session


def guarded_client(policy: AddressPolicy) -> aiohttp.ClientSession:
    """The process's session for URLs from task payloads under ``policy``, created on first
    use (on the running loop). Connecting to a refused address raises
    :class:`aiohttp.ClientConnectorError` whose ``os_error`` is an
    :class:`~deerflow_agent._netpolicy.AddressRefused`; nothing is sent to it."""
    import aiohttp

    global _guarded_loop
    loop = asyncio.get_running_loop()
    if _guarded_loop is not loop:
        _guarded.clear()
        _guarded_loop = loop
    session = _guarded.get(policy)
    if session is None or session.closed:
        session = _guarded[policy] = aiohttp.ClientSession(
            headers={"User-Agent": "deerflow-agent"},
            connector=aiohttp.TCPConnector(limit=0, socket_factory=policy.socket_factory),
        )
    return session


async def close_http_session() -> None:
    """Close the shared HTTP sessions, if any were opened (at agent shutdown)."""
    global _session, _session_loop, _guarded_loop
    if _session is not None and not _session.closed:
        await _session.close()
    _session = _session_loop = None
    sessions = list(_guarded.values())
    _guarded.clear()
    _guarded_loop = None
    for session in sessions:
        if not session.closed:
            await session.close()


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say (or said nonsense).

    ``retry-after-ms`` (OpenAI's, millisecond precision) wins over ``Retry-After``, which may be
    delta-seconds or an HTTP date. Header names are matched case-insensitively when ``headers``
    is aiohttp's multidict."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms)
        except ValueError:
            pass
        else:
            if value >= 0 and value != float("inf"):
                return value / 1000
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return value if 0 <= value < float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def response_signals(status: int, headers: Mapping[str, str]) -> dict[str, str]:
    """The signals of a response's status and headers: ``http.status``, the ``ratelimit.*``
    values (reset durations like "6m0s" in seconds) and ``retry_after_s`` when the provider
    gave one. Headers that do not parse are left out."""
    found = {signals.HTTP_STATUS: str(status)}
    for header, key, is_duration in _RATELIMIT_HEADERS:
        raw = headers.get(header)
        if raw is None:
            continue
        value = signals.parse_duration_s(raw) if is_duration else _float(raw)
        if value is not None:
            found[key] = decimal(value)
    wait_s = retry_after_s(headers)
    if wait_s is not None:
        found[signals.RETRY_AFTER_S] = decimal(wait_s)
    return found


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def decimal(value: float) -> str:
    """Numbers as decimal text for the wire: integers without ".0", seconds to the microsecond."""
    if value == int(value):
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")
