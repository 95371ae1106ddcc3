"""Credentials for the authentication tests (issue #17 item 2): fresh tokens and the auth file
(``--auth-file``) that admits them, written atomically so that a rewrite is seen at once."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from deerflow_controller.service.credentials import digest


@dataclass
class Tokens:
    """One token per role: an agent's join token, two users of tenants a and b, an admin and
    a metrics scraper. ``stale`` ones were never in any file."""

    join: str = field(default_factory=lambda: "join-" + secrets.token_urlsafe(24))
    alice: str = field(default_factory=lambda: "alice-" + secrets.token_urlsafe(24))
    bob: str = field(default_factory=lambda: "bob-" + secrets.token_urlsafe(24))
    admin: str = field(default_factory=lambda: "admin-" + secrets.token_urlsafe(24))
    metrics: str = field(default_factory=lambda: "metrics-" + secrets.token_urlsafe(24))
    wrong: str = field(default_factory=lambda: "wrong-" + secrets.token_urlsafe(24))

    def all(self) -> list[str]:
        return [self.join, self.alice, self.bob, self.admin, self.metrics, self.wrong]


def auth_toml(
    t: Tokens,
    *,
    clients: dict[str, tuple[str, str, str]] | None = None,
    agents: dict[str, str] | None = None,
) -> str:
    """The file's text; ``clients`` (name: (token, tenant, role)) replaces the default ones,
    ``agents`` (name: join token) the one join token ``pool``."""
    if agents is None:
        agents = {"pool": t.join}
    if clients is None:
        clients = {
            "alice": (t.alice, "a", "user"),
            "bob": (t.bob, "b", "user"),
            "root": (t.admin, "ops", "admin"),
            "prometheus": (t.metrics, "", "metrics"),
        }
    out = [
        f'[[agent]]\nname = "{name}"\nsha256 = "{digest(token)}"\n'
        for name, token in agents.items()
    ]
    for name, (token, tenant, role) in clients.items():
        tenant_line = f'tenant = "{tenant}"\n' if tenant else ""
        out.append(
            f'[[client]]\nname = "{name}"\n{tenant_line}role = "{role}"\n'
            f'sha256 = "{digest(token)}"\n'
        )
    return "\n".join(out)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by a new file (a new inode: the controller sees the change at once)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
