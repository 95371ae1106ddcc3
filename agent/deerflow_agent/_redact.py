"""Keeping secrets from task payloads out of what leaves a handler as text.

An attempt's error message travels to the controller, its logs, the spans of both daemons, the
dashboard's recent errors and the client. A handler (ours, or a careless plugin's
``raise ValueError(f"bad request {doc}")``) may put a payload's API key into that message, and a
URL may carry one in its query (``?api_key=...``) or its user:password. So:

- :func:`display_url` is how our handlers show a URL: no user:password, query values elided;
- :func:`payload_secrets` finds the secret-looking values of a payload (by field name, at any
  depth) and :func:`redact` replaces them, and the agent's own provider keys, in any text.
  The runtime applies both to every failed attempt's message and metadata, and
  ``ctx.logger`` to every line a handler logs. Only failures and log lines pay for it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MASK",
    "SECRET_FIELDS",
    "display_url",
    "environment_secrets",
    "payload_secrets",
    "redact",
    "redact_urls",
]

MASK = "***"
SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "x-api-key",
        "authorization",
        "proxy-authorization",
        "access_token",
        "refresh_token",
        "token",
        "secret",
        "client_secret",
        "password",
        "cookie",
    }
)
"""Field names (compared case-insensitively) whose string values are secrets."""
_NEEDLES = (b"key", b"auth", b"token", b"secret", b"password", b"cookie")
_MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words
_MAX_DEPTH = 32
_URL = re.compile(r"https?://[^\s'\"<>]+")
_ENV_KEYS = ("DEERFLOW_LLM_API_KEY", "DEERFLOW_SEARCH_API_KEY", "DEERFLOW_CRAWL_API_KEY")


def display_url(url: str) -> str:
    """``url`` for messages: without user:password, each query value replaced by ``***``,
    without the fragment; unparsable text becomes a placeholder."""
    from yarl import URL  # with the first message that shows a URL, not with the agent

    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return "<an unparsable URL>"
    if parsed.user is not None or parsed.password is not None:
        parsed = parsed.with_user(None)
    if parsed.raw_query_string:
        parsed = parsed.with_query({k: MASK for k in parsed.query})
    return str(parsed.with_fragment(None))


def redact_urls(text: str) -> str:
    """Every http(s) URL in ``text`` shown as :func:`display_url` shows it."""
    return _URL.sub(lambda m: display_url(m.group(0)), text)


def payload_secrets(payload: bytes) -> tuple[str, ...]:
    """The string values under secret-looking field names (:data:`SECRET_FIELDS`) anywhere in a
    JSON payload, longest first (so a key is masked before a part of it); for an
    ``Authorization: Bearer X`` value also X. Empty when the payload is not JSON or names no
    such field; never raises."""
    lowered = payload.lower()
    if not any(n in lowered for n in _NEEDLES):
        return ()
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return ()
    found: set[str] = set()
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            continue
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, str) and str(k).lower() in SECRET_FIELDS:
                    _add(found, v)
                elif isinstance(v, dict | list):
                    stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return tuple(sorted(found, key=len, reverse=True))


def _add(found: set[str], value: str) -> None:
    value = value.strip()
    if len(value) >= _MIN_SECRET_CHARS:
        found.add(value)
    scheme, _, credential = value.partition(" ")
    if credential and scheme.lower() in ("bearer", "basic", "token"):
        _add(found, credential)


def environment_secrets() -> tuple[str, ...]:
    """The provider API keys in the agent's environment (read each call: tests set them)."""
    keys = (os.environ.get(name, "").strip() for name in _ENV_KEYS)
    return tuple(k for k in keys if len(k) >= _MIN_SECRET_CHARS)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***`` (and its JSON-escaped
    form, for text that quotes a payload)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret and escaped in text:
            text = text.replace(escaped, MASK)
    return text
