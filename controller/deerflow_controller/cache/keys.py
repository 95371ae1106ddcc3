"""The canonical request key: what makes two requests the same question.

A key hashes the handler and the payload in canonical form. A JSON payload is parsed and
re-serialised with sorted keys and no whitespace, its strings NFC-normalised and trimmed, so
formatting, key order and stray spaces do not split the cache. Anything else is hashed as raw
bytes. Payload fields a handler names as not changing the answer (credentials, trace ids) are
left out; everything else is an option that changes the answer and stays in.

For the similarity layer the key also carries a *scope*: the same hash with the text field left
out, so two requests may only be compared when every other option (depth, max_results, model)
is equal."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from deerflow_controller.cache.text import Words

if TYPE_CHECKING:
    from deerflow_controller.cache.embedding import Vector

IGNORED_FIELDS = frozenset({"api_key", "apikey", "authorization", "trace_id", "request_id"})
"""Top-level payload fields that never change the answer: left out of the key (and never
persisted as part of it). Credentials in particular must not split or leak the cache."""


class SkipReason(StrEnum):
    """Why a request bypasses the cache; each is counted in ``stats()['skips']``."""

    POLICY_OFF = "policy_off"
    NOT_CACHEABLE = "not_cacheable"
    NONDETERMINISTIC = "nondeterministic"
    TOO_LARGE = "too_large"
    UNHASHABLE = "unhashable"


@dataclass(slots=True, eq=False)
class RequestKey:
    """One request's identity, from ``ResultCache.lookup`` (inside ``Miss`` and ``Hit``).

    The scheduler keeps it on the task and hands it back to ``attach``, ``complete`` and
    ``fail``; it carries what the store needs then (text, freshness, embedding), so nothing is
    recomputed when the result arrives. Treat as opaque."""

    handler: str
    digest: bytes
    """16-byte BLAKE2b of the handler and the canonical payload: the exact-match and dedup key."""
    scope: bytes
    """Digest of everything but the similarity text: similarity compares within one scope."""
    text: str
    ttl_s: float
    """How long an answer to this request stays fresh."""
    threshold: float = 0.0
    """Similarity threshold (0: this request uses the exact layer only)."""
    words: Words | None = field(default=None, repr=False)
    vector: Vector | None = field(default=None, repr=False)
    refresh: bool = False
    """CachePolicy.REFRESH: not read from the cache, but overwrites it."""
    near: bytes | None = field(default=None, repr=False)
    """The best neighbour below the threshold (for synonym learning when the answer comes)."""

    @property
    def similar(self) -> bool:
        return self.words is not None


@dataclass(frozen=True, slots=True)
class Canonical:
    """A payload in canonical form: its digest, its similarity scope and its text."""

    digest: bytes
    scope: bytes
    text: str
    """The similarity field's text ('' if none), else the payload's strings (for freshness)."""
    has_field: bool
    """The similarity field was present and a string."""


def _norm(value: Any, depth: int = 0) -> Any:
    if depth > 64:
        raise ValueError("payload nested too deep")
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    if isinstance(value, dict):
        return {str(k): _norm(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v, depth + 1) for v in value]
    if isinstance(value, float) and value != value:
        raise ValueError("NaN in payload")
    return value


def _strings(value: Any, out: list[str], budget: int = 64) -> None:
    if len(out) >= budget:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out, budget)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out, budget)


def _pop_path(obj: dict[str, Any], path: str) -> Any:
    """Remove and return the value at a dotted path (None if absent)."""
    parts = path.split(".")
    cur: Any = obj
    for p in parts[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    if not isinstance(cur, dict):
        return None
    return cur.pop(parts[-1], None)


def _hash(handler: str, body: bytes, partition: str = "") -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(handler.encode())
    h.update(b"\x00")
    if partition:
        # Only a named partition changes the key: the default one ("") keeps the keys that
        # caches persisted before partitions existed.
        h.update(b"p" + partition.encode() + b"\x00")
    h.update(body)
    return h.digest()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonicalise(
    handler: str, payload: bytes, similarity_field: str, partition: str = ""
) -> Canonical:
    """The canonical form of a request. Raises ValueError if a JSON payload cannot be put in
    canonical form (NaN, nesting beyond 64 levels): the caller skips the cache for it.

    ``partition`` (the task's tenant) is part of every digest: the same request from two
    tenants is two questions, so one tenant's answer is never served to, nor deduplicated
    with, another's."""
    head = payload[:1].lstrip() or payload.lstrip()[:1]
    if head not in (b"{", b"["):
        digest = _hash(handler, b"r" + payload, partition)
        text = payload[:4096].decode("utf-8", "ignore")
        return Canonical(digest, digest, text, False)
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        digest = _hash(handler, b"r" + payload, partition)
        return Canonical(digest, digest, payload[:4096].decode("utf-8", "ignore"), False)
    try:
        obj = _norm(obj)
        if isinstance(obj, dict):
            for f in IGNORED_FIELDS.intersection(obj):
                del obj[f]
        digest = _hash(handler, b"j" + _dumps(obj), partition)
        if similarity_field and isinstance(obj, dict):
            text = _pop_path(obj, similarity_field)
            if isinstance(text, str):
                scope = _hash(handler, b"s" + _dumps(obj), partition)
                return Canonical(digest, scope, text, True)
    except RecursionError as e:
        raise ValueError("payload nested too deep") from e
    found: list[str] = []
    _strings(obj, found)
    return Canonical(digest, digest, " ".join(found), False)
