"""Built-in handlers, installed through the ``deerflow.handlers`` entry points in pyproject.

Payloads and outputs are UTF-8 JSON except for ``echo``. A payload that is not valid JSON or lacks
a field raises :class:`FatalError` naming the field: no retry can fix it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import math
import time
from typing import Any

import aiohttp

from ._handler import FatalError, Handler, HandlerError, HandlerKind, HandlerResult, TaskContext

__all__ = ["close_http_session", "cpu", "echo", "http", "sleep"]


def _parse(name: str, payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FatalError(f"{name}: payload is not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FatalError(f"{name}: payload must be a JSON object, got {type(doc).__name__}")
    return doc


def _number(name: str, doc: dict[str, Any], key: str, default: float | None = None) -> float:
    value = doc.get(key, default)
    if value is None:
        raise FatalError(f"{name}: payload field {key!r} is required (a number)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FatalError(f"{name}: payload field {key!r} must be a finite number, got {value!r}")
    if value < 0:
        raise FatalError(f"{name}: payload field {key!r} must be >= 0, got {value!r}")
    return float(value)


def _int(name: str, doc: dict[str, Any], key: str, default: int | None = None) -> int:
    value = doc.get(key, default)
    if value is None:
        raise FatalError(f"{name}: payload field {key!r} is required (an integer)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise FatalError(f"{name}: payload field {key!r} must be an integer, got {value!r}")
    return value


def _str(name: str, doc: dict[str, Any], key: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if value is None:
        raise FatalError(f"{name}: payload field {key!r} is required (a string)")
    if not isinstance(value, str):
        raise FatalError(f"{name}: payload field {key!r} must be a string, got {value!r}")
    return value


# ------------------------------------------------------------------------- echo


async def _echo(ctx: TaskContext, payload: bytes) -> bytes:
    return payload


echo = Handler(
    "echo", _echo, HandlerKind.IO, description="Return the payload unchanged (no-op benchmarks)."
)


# ------------------------------------------------------------------------- sleep


async def _sleep(ctx: TaskContext, payload: bytes) -> bytes:
    seconds = _number("sleep", _parse("sleep", payload), "seconds")
    await asyncio.sleep(seconds)
    return json.dumps({"slept": seconds}).encode()


sleep = Handler(
    "sleep",
    _sleep,
    HandlerKind.IO,
    description='Sleep {"seconds": float} on the event loop; cancellable.',
)


# ------------------------------------------------------------------------- cpu


def _cpu(payload: bytes) -> bytes:
    doc = _parse("cpu", payload)
    rounds = _int("cpu", doc, "rounds")
    if rounds < 1:
        raise FatalError(f"cpu: payload field 'rounds' must be >= 1, got {rounds}")
    digest = _str("cpu", doc, "data", "").encode()
    sha256 = hashlib.sha256
    for _ in range(rounds):
        digest = sha256(digest).digest()
    return json.dumps({"digest": digest.hex()}).encode()


cpu = Handler(
    "cpu",
    _cpu,
    HandlerKind.CPU,
    description='SHA-256 applied {"rounds": int} times to {"data": str}; runs in the process pool.',
)


# ------------------------------------------------------------------------- http

HTTP_DEFAULT_TIMEOUT_S = 30.0
HTTP_DEFAULT_MAX_BYTES = 1 << 20
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_session: aiohttp.ClientSession | None = None
_session_loop: asyncio.AbstractEventLoop | None = None


def _client() -> aiohttp.ClientSession:
    """The process's shared session, created on first use (on the running loop)."""
    global _session, _session_loop
    loop = asyncio.get_running_loop()
    if _session is None or _session.closed or _session_loop is not loop:
        _session = aiohttp.ClientSession(
            headers={"User-Agent": "deerflow-agent"}, connector=aiohttp.TCPConnector(limit=0)
        )
        _session_loop = loop
    return _session


async def close_http_session() -> None:
    """Close the shared HTTP session, if one was opened (at agent shutdown)."""
    global _session, _session_loop
    if _session is not None and not _session.closed:
        await _session.close()
    _session = _session_loop = None


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; 0 when absent or bad."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


async def _http(ctx: TaskContext, payload: bytes) -> HandlerResult:
    doc = _parse("http", payload)
    url = _str("http", doc, "url")
    if not url.startswith(("http://", "https://")):
        raise FatalError(f"http: payload field 'url' must be an http(s) URL, got {url!r}")
    timeout_s = _number("http", doc, "timeout_s", HTTP_DEFAULT_TIMEOUT_S)
    max_bytes = _int("http", doc, "max_bytes", HTTP_DEFAULT_MAX_BYTES)
    if max_bytes < 0:
        raise FatalError(f"http: payload field 'max_bytes' must be >= 0, got {max_bytes}")
    try:
        async with _client().get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            status = resp.status
            if status in _RETRYABLE_STATUS or status >= 500:
                raise HandlerError(
                    f"GET {url} answered {status} {resp.reason or ''}".rstrip(),
                    retry_after_s=_retry_after(resp.headers.get("Retry-After")),
                )
            if 400 <= status < 500:
                raise FatalError(f"GET {url} answered {status} {resp.reason or ''}".rstrip())
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 << 10):
                body += chunk
                if len(body) > max_bytes:
                    break
            truncated = len(body) > max_bytes
            text = bytes(body[:max_bytes]).decode(resp.charset or "utf-8", errors="replace")
            headers = resp.headers
            content_type = headers.get("Content-Type", "")
            metadata = {"http.status": str(status)}
            for k, v in headers.items():
                if k.lower().startswith("x-ratelimit-"):
                    metadata[k.lower()] = v
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise HandlerError(f"GET {url} failed: {detail}") from None
    output = {"status": status, "content_type": content_type, "body": text, "truncated": truncated}
    return HandlerResult(json.dumps(output).encode(), metadata)


http = Handler(
    "http",
    _http,
    HandlerKind.IO,
    description='GET {"url": str, "timeout_s": float, "max_bytes": int}; returns status and body.',
)
