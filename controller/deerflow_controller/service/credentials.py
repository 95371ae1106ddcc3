"""The controller's credentials file (``--auth-file``): who may join, submit and administer.

A TOML file of SHA-256 digests of tokens, never the tokens themselves (``deerflow token new``
prints a fresh token and the lines to add)::

    [[agent]]                  # a join token: may connect as an agent (AgentService)
    name = "pool-a"
    sha256 = "9f86d0..."

    [[agent]]                  # an mTLS identity (with --tls-* client certificates)
    name = "node-7"
    identity = "agent-7.deerflow.internal"

    [[client]]                 # a bearer token for the SDK, the CLI and the HTTP side
    name = "alice"
    tenant = "research"        # every job it submits belongs to this tenant
    role = "user"              # "user", "admin" (drain, stats of all tenants) or "metrics"
    sha256 = "60303a..."       # (/metrics only)

A presented token is hashed and compared with every digest of its kind by
:func:`hmac.compare_digest`, without an early exit, so the time taken says nothing about which
digest came close. :class:`Credentials` re-reads the file when its size, mtime or inode change
(checked at each call and every ``RELOAD_CHECK_S`` by :meth:`Credentials.watch`: one ``stat``)
or when :meth:`Credentials.reload` is called (SIGHUP); a file that became invalid is refused with
one ERROR line and the previous credentials stay in force. A reload that changed the credentials
in force tells the listeners given to :meth:`Credentials.on_change` (the interceptor, which ends
the open streams of revoked credentials: ``service.open_streams``). Errors are
:class:`AuthFileError`: one line naming the file, the line and the key.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DIGEST_HEX_CHARS = 64
MAX_TOKEN_CHARS = 4096
"""A presented token longer than this is refused unhashed (hashing a megabyte per call costs)."""
RELOAD_CHECK_S = 1.0
"""How often :meth:`Credentials.watch` looks at the file (one ``stat``): a revocation reaches
the streams already open within this long, even when no new call comes to look."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class Role(enum.Enum):
    AGENT = "agent"
    USER = "user"
    ADMIN = "admin"
    METRICS = "metrics"


CLIENT_ROLES = (Role.USER, Role.ADMIN, Role.METRICS)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call is from: the credential's name (for logs), its tenant and role."""

    name: str
    role: Role
    tenant: str = ""

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN


class AuthFileError(ValueError):
    """The credentials file cannot be used; the message is one line naming file, line, key."""


def digest(token: str) -> str:
    """The SHA-256 hex digest of a token, as the credentials file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    sha256: bytes  # empty for an identity-only agent entry
    identity: str = ""


@dataclass(frozen=True, slots=True)
class CredentialSet:
    """One parsed version of the file (plus the controller's own ephemeral credentials)."""

    agents: tuple[_Entry, ...] = ()
    clients: tuple[_Entry, ...] = ()

    def agent_by_token(self, token: str) -> Principal | None:
        return _match(self.agents, token)

    def client_by_token(self, token: str) -> Principal | None:
        return _match(self.clients, token)

    def agent_by_identity(self, identity: str) -> Principal | None:
        found = None
        for entry in self.agents:
            if entry.identity and hmac.compare_digest(entry.identity.encode(), identity.encode()):
                found = entry.principal
        return found


def _match(entries: tuple[_Entry, ...], token: str) -> Principal | None:
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    presented = hashlib.sha256(token.encode()).digest()
    found = None
    for entry in entries:  # every entry, no early exit: constant time in the match
        if entry.sha256 and hmac.compare_digest(entry.sha256, presented):
            found = entry.principal
    return found


def _header_lines(text: str, table: str) -> list[int]:
    """1-based line numbers of each ``[[table]]`` header, in order (TOML keeps that order)."""
    pattern = re.compile(rf"^\s*\[\[\s*{table}\s*\]\]")
    return [i for i, line in enumerate(text.splitlines(), 1) if pattern.match(line)]


def parse(text: str, path: str) -> CredentialSet:
    """Parse the file's text; :class:`AuthFileError` (one line) when anything is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AuthFileError(f"{path}: not valid TOML: {e}") from None
    unknown = sorted(set(doc) - {"agent", "client"})
    if unknown:
        raise AuthFileError(
            f"{path}: unknown table {unknown[0]!r}; the file has [[agent]] and [[client]] "
            "entries only"
        )
    agents = _entries(doc, "agent", text, path)
    clients = _entries(doc, "client", text, path)
    return CredentialSet(tuple(agents), tuple(clients))


def _entries(doc: dict[str, Any], table: str, text: str, path: str) -> list[_Entry]:
    raw = doc.get(table, [])
    lines = _header_lines(text, table)
    if not isinstance(raw, list):
        raise AuthFileError(f"{path}: {table!r} must be [[{table}]] entries, not a single table")
    out: list[_Entry] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for i, item in enumerate(raw):
        where = f"{path} line {lines[i] if i < len(lines) else '?'} ([[{table}]] #{i + 1})"
        out.append(_entry(item, table, where))
        entry = out[-1]
        if entry.principal.name in names:
            raise AuthFileError(f"{where}: key 'name': {entry.principal.name!r} is used twice")
        names.add(entry.principal.name)
        if entry.sha256 and entry.sha256 in digests:
            raise AuthFileError(f"{where}: key 'sha256': the same digest appears twice")
        digests.add(entry.sha256)
    return out


def _entry(item: Any, table: str, where: str) -> _Entry:
    if not isinstance(item, dict):
        raise AuthFileError(f"{where}: must be a table of keys")
    allowed = (
        {"name", "sha256", "identity"} if table == "agent" else {"name", "sha256", "tenant", "role"}
    )
    for key in item:
        if key not in allowed:
            raise AuthFileError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            )
    name = _string(item, "name", where)
    if not _NAME.match(name):
        raise AuthFileError(
            f"{where}: key 'name': {name[:64]!r} is not 1-128 letters, digits or ._@:/+-"
        )
    sha = item.get("sha256", "")
    if not isinstance(sha, str) or (sha and not _HEX.match(sha)):
        raise AuthFileError(
            f"{where}: key 'sha256': not 64 lowercase hex characters (the digest of the token, "
            "as `deerflow token new` prints it; never the token itself)"
        )
    if table == "agent":
        identity = item.get("identity", "")
        if not isinstance(identity, str):
            raise AuthFileError(f"{where}: key 'identity': must be a string")
        if not sha and not identity:
            raise AuthFileError(f"{where}: key 'sha256' (or 'identity') is missing")
        return _Entry(Principal(name, Role.AGENT), bytes.fromhex(sha), identity)
    if not sha:
        raise AuthFileError(f"{where}: key 'sha256' is missing")
    role_name = item.get("role", Role.USER.value)
    roles = {r.value: r for r in CLIENT_ROLES}
    if role_name not in roles:
        raise AuthFileError(
            f"{where}: key 'role': {str(role_name)[:32]!r} is not one of user, admin, metrics"
        )
    role = roles[role_name]
    tenant = item.get("tenant", "")
    if role is not Role.METRICS:
        tenant = _string(item, "tenant", where)
        if not _NAME.match(tenant):
            raise AuthFileError(
                f"{where}: key 'tenant': {tenant[:64]!r} is not 1-128 letters, digits or ._@:/+-"
            )
    return _Entry(Principal(name, role, tenant), bytes.fromhex(sha))


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        raise AuthFileError(f"{where}: key {key!r} is missing")
    if not isinstance(value, str) or not value:
        raise AuthFileError(f"{where}: key {key!r}: must be a non-empty string")
    return value


class Credentials:
    """The credentials in force: the file's, re-read when it changes, plus ephemeral agent
    tokens the controller made itself (the join token of its ``--local-agents``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._failed: tuple[int, int, int] | None = None
        self._extra_agents: tuple[_Entry, ...] = ()
        self._listeners: list[Callable[[CredentialSet], None]] = []
        self._file = self._load()  # raises AuthFileError at start-up
        self._set = self._file

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> CredentialSet:
        try:
            signature = self._stat()
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise AuthFileError(f"{self.path}: cannot read it ({reason})") from None
        parsed = parse(text, str(self.path))
        self._signature = signature
        return parsed

    def add_agent_token(self, name: str, token: str) -> None:
        """Admit agents presenting ``token`` (kept in memory only) as ``name``."""
        self._extra_agents += (
            _Entry(Principal(name, Role.AGENT), hashlib.sha256(token.encode()).digest()),
        )
        self._set = self._merged(self._file)

    def on_change(self, listener: Callable[[CredentialSet], None]) -> None:
        """Call ``listener`` with the new credentials after each reload that changed them (not
        after one that read the same entries again). It runs in the caller of :meth:`reload`
        (the event loop: a call's check, :meth:`watch` or SIGHUP) and must not block."""
        self._listeners.append(listener)

    def _merged(self, file: CredentialSet) -> CredentialSet:
        return CredentialSet(file.agents + self._extra_agents, file.clients)

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file when it changed (always with ``force``). A file that cannot be
        used is logged once (ERROR) and the credentials in force stay. True when reloaded."""
        try:
            signature = self._stat()
        except OSError as e:
            signature = None
            if self._failed != (0, 0, 0):
                self._failed = (0, 0, 0)
                log.error(
                    "auth file %s: cannot read it (%s); keeping the credentials in force",
                    self.path,
                    e.strerror,
                )
            return False
        if not force and (signature == self._signature or signature == self._failed):
            return False
        try:
            parsed = self._load()
        except AuthFileError as e:
            self._failed = signature
            log.error("%s; keeping the credentials in force", e)
            return False
        self._failed = None
        before = self._set
        self._file = parsed
        self._set = self._merged(parsed)
        log.info(
            "auth file %s loaded: %d agent and %d client credentials",
            self.path,
            len(parsed.agents),
            len(parsed.clients),
        )
        if self._set != before:
            for listener in self._listeners:
                listener(self._set)
        return True

    async def watch(self, interval_s: float = RELOAD_CHECK_S) -> None:
        """Re-read the file whenever it changed, looking every ``interval_s`` seconds (one
        ``stat``), until cancelled: calls look at each arrival, but open streams make none."""
        while True:
            await asyncio.sleep(interval_s)
            self.reload()

    def current(self) -> CredentialSet:
        """The credentials in force, after re-reading the file if it changed."""
        self.reload()
        return self._set
