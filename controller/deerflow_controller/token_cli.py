"""``deerflow token new``: a fresh token and the lines of the credentials file that admit it.

The token is printed once and never stored: the file (``--auth-file``) keeps only its SHA-256
digest, so a leaked file admits nobody (see docs/SECURITY.md)."""

from __future__ import annotations

import re
import secrets

import click

from deerflow_controller.service.credentials import digest

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,127}$")


def _name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _NAME.match(value):
        raise click.BadParameter("use 1-128 letters, digits or ._@:/+- (starting with one)")
    return value


@click.group()
def token() -> None:
    """Make tokens for a controller's --auth-file."""


@token.command("new")
@click.option("--tenant", callback=_name, help="The tenant the client's jobs belong to.")
@click.option("--admin", is_flag=True, help="May drain agents and see every tenant's stats.")
@click.option("--agent", is_flag=True, help="A join token for agents instead of a client token.")
@click.option("--metrics", is_flag=True, help="A token that may only read /metrics.")
@click.option("--name", callback=_name, help="The entry's name in logs [default: the tenant].")
def new(tenant: str | None, admin: bool, agent: bool, metrics: bool, name: str | None) -> None:
    """Print a fresh token (stderr) and the TOML lines to append to the auth file (stdout)."""
    if sum((admin, agent, metrics)) > 1:
        raise click.UsageError("give at most one of --admin, --agent, --metrics")
    if not (agent or metrics) and tenant is None:
        raise click.UsageError("a client token needs --tenant T (or pass --agent / --metrics)")
    fresh = secrets.token_urlsafe(32)
    entry_name = name or tenant or ("agents" if agent else "metrics")
    click.echo(f"token (shown once; give it to its user, keep it out of files): {fresh}", err=True)
    lines = ["[[agent]]" if agent else "[[client]]", f'name = "{entry_name}"']
    if not agent:
        if tenant is not None:
            lines.append(f'tenant = "{tenant}"')
        lines.append(f'role = "{"admin" if admin else "metrics" if metrics else "user"}"')
    lines.append(f'sha256 = "{digest(fresh)}"')
    click.echo("\n".join(lines))
