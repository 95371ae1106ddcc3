"""Built-in handlers, installed through the ``deerflow.handlers`` entry points in pyproject.

Payloads and outputs are UTF-8 JSON except for ``echo``. A payload that is not valid JSON or lacks
a field raises :class:`FatalError` naming the field: no retry can fix it.

Each declares its traits (see :class:`Handler`): default durations are cold starts for the
controller's predictor, not promises. None is cacheable: ``echo`` measures the control plane
itself (caching it would measure the cache, and fill it with no-op answers), and ``sleep``,
``cpu`` and ``work`` are there to spend time. A task may still ask for the cache (cache="on").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from deerflow_common.errors import ErrorClass

from ._context import TaskContext
from ._errors import FatalError, HandlerError
from ._handler import Handler, HandlerKind, HandlerResult
from ._http import close_http_session, guarded_client, response_signals, retry_after_s
from ._netpolicy import AddressRefused, refusal_sentence
from ._payload import integer as _int
from ._payload import number as _number
from ._payload import parse_object as _parse
from ._payload import string as _str
from ._redact import display_url, redact_urls

__all__ = ["close_http_session", "cpu", "echo", "http", "merge_results", "sleep", "work"]


# ------------------------------------------------------------------------- echo


async def _echo(ctx: TaskContext, payload: bytes) -> bytes:
    return payload


echo = Handler(
    "echo",
    _echo,
    HandlerKind.IO,
    description="Return the payload unchanged (no-op benchmarks).",
    default_duration_s=0.00005,  # one loop turn: about 50 us on the agent
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
    default_duration_s=1.0,  # the payload says; benchmarks and demos sleep 0.1-5 s
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
    default_duration_s=0.1,  # about 300,000 rounds on one core
    default_cpu_s=0.1,
    default_memory_bytes=32 << 20,  # a forkserver pool worker's resident size
)


# ------------------------------------------------------------------------- work

WORK_DEFAULT_PER_ITEM_S = 0.1

WORK_SPEED = float(os.environ.get("DEERFLOW_WORK_SPEED", "1") or 1)
"""How fast this agent does ``work`` (1 = nominal; 0.5 takes twice as long): stands in for
slower hardware in the heterogeneous-cluster benchmark. Read once at start."""


async def _work(ctx: TaskContext, payload: bytes) -> bytes:
    doc = _parse("work", payload)
    items = doc.get("items")
    if not isinstance(items, list):
        raise FatalError(f"work: payload field 'items' must be a JSON array, got {items!r}")
    per_item_s = _number("work", doc, "per_item_s", WORK_DEFAULT_PER_ITEM_S) / WORK_SPEED
    n = len(items)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        # Sleep to an absolute schedule so per-item timer slack does not add up.
        await asyncio.sleep(max(0.0, start + (i + 1) * per_item_s - loop.time()))
        ctx.progress((i + 1) / n, f"{i + 1}/{n} items")
    return json.dumps({"results": items}).encode()


def merge_results(outputs: Sequence[bytes | None]) -> bytes:
    """Merger of handlers whose output is ``{"results": [one per item]}``: the parts' lists
    joined in part order. A failed part (None) adds nothing; the controller reports its items.
    Raises ValueError for an output of another shape (a SPLIT_ERROR for the task)."""
    merged: list[Any] = []
    for i, out in enumerate(outputs):
        if out is None:
            continue
        doc = json.loads(out)
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list):
            raise ValueError(f"part {i}'s output has no 'results' list to merge")
        merged.extend(results)
    return json.dumps({"results": merged}).encode()


work = Handler(
    "work",
    _work,
    HandlerKind.IO,
    description='Sleep {"per_item_s": float} per element of {"items": [...]} (scheduling '
    'benchmarks); returns {"results": items}.',
    items_field="items",
    merger=merge_results,
    default_duration_s=WORK_DEFAULT_PER_ITEM_S,  # per item
)


# ------------------------------------------------------------------------- http

HTTP_DEFAULT_TIMEOUT_S = 30.0
HTTP_DEFAULT_MAX_BYTES = 1 << 20
_RETRYABLE_STATUS = frozenset({408, 425, 429})


async def _http(ctx: TaskContext, payload: bytes) -> HandlerResult:
    # aiohttp is loaded by the first request, not with the agent (its start-up).
    import aiohttp
    from yarl import URL

    doc = _parse("http", payload)
    url = _str("http", doc, "url")
    shown = display_url(url)
    if not url.startswith(("http://", "https://")):
        raise FatalError(f"http: payload field 'url' must be an http(s) URL, got {shown!r}")
    timeout_s = _number("http", doc, "timeout_s", HTTP_DEFAULT_TIMEOUT_S)
    max_bytes = _int("http", doc, "max_bytes", HTTP_DEFAULT_MAX_BYTES)
    if max_bytes < 0:
        raise FatalError(f"http: payload field 'max_bytes' must be >= 0, got {max_bytes}")
    policy = ctx.address_policy
    try:
        host = URL(url).raw_host or ""
    except ValueError:
        raise FatalError(f"http: payload field 'url' is not a valid URL: {shown!r}") from None
    why = policy.why_refused_host(host)
    if why is not None:
        raise FatalError(refusal_sentence(f"http: GET {shown}", host.strip("[]"), why))
    try:
        session = guarded_client(policy)
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            status = resp.status
            signals = response_signals(status, resp.headers)
            if status in _RETRYABLE_STATUS or status >= 500:
                raise HandlerError(
                    f"GET {shown} answered {status} {resp.reason or ''}".rstrip(),
                    retry_after_s=retry_after_s(resp.headers) or 0.0,
                    metadata=signals,
                    error_class=ErrorClass.RATE_LIMITED if status == 429 else ErrorClass.TRANSIENT,
                )
            if 400 <= status < 500:
                raise FatalError(
                    f"GET {shown} answered {status} {resp.reason or ''}".rstrip(),
                    metadata=signals,
                    error_class=ErrorClass.FATAL,
                )
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 << 10):
                body += chunk
                if len(body) > max_bytes:
                    break
            truncated = len(body) > max_bytes
            text = bytes(body[:max_bytes]).decode(resp.charset or "utf-8", errors="replace")
            headers = resp.headers
            content_type = headers.get("Content-Type", "")
            metadata = signals
    except aiohttp.ClientConnectorError as exc:
        refused = exc.os_error
        if isinstance(refused, AddressRefused):
            where = f"http: GET {shown}" + (
                "" if exc.host == host.strip("[]") else f" (redirected to {exc.host})"
            )
            raise FatalError(refusal_sentence(where, refused.address, refused.why)) from None
        raise HandlerError(
            f"GET {shown} failed: {exc.strerror or type(exc).__name__}",
            error_class=ErrorClass.TRANSIENT,
        ) from None
    except aiohttp.InvalidURL as exc:
        # For the URL given or a redirect's; aiohttp names the part it could not use.
        bad = redact_urls(str(exc.url))[:200]
        raise FatalError(
            f"http: GET {shown} failed: {bad!r} (in it or in a redirect) is not a valid URL"
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise HandlerError(
            f"GET {shown} failed: {redact_urls(detail)}", error_class=ErrorClass.TRANSIENT
        ) from None
    output = {"status": status, "content_type": content_type, "body": text, "truncated": truncated}
    return HandlerResult(json.dumps(output).encode(), metadata)


http = Handler(
    "http",
    _http,
    HandlerKind.IO,
    description='GET {"url": str, "timeout_s": float, "max_bytes": int}; returns status and body. '
    "Loopback, link-local, metadata and private addresses are refused unless the agent's "
    "--http-allow names them.",
    default_duration_s=0.5,
)
