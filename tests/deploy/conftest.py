"""Files the deploy/ commands name, made for real: certificates by ``deerflow certs``, the auth
file and tokens by ``deerflow token new``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from deerflow_controller.cli import main as cli_main

from ._commands import DEPLOY, HEALTHCHECK, HEALTHCHECK_IN_IMAGE

CERT_HOSTS = ("controller-1", "controller-2", "deerflow-controller")


def _deerflow(args: list[str]) -> Result:
    """``deerflow ARGS`` in this process (the CLI's import costs seconds per subprocess)."""
    done = CliRunner().invoke(cli_main, args, catch_exceptions=False)
    assert done.exit_code == 0, (args, done.output)
    return done


def _token(args: list[str], auth: Path) -> str:
    """``deerflow token new ARGS``: its entry appended to ``auth``, the token returned."""
    done = _deerflow(["token", "new", *args])
    with auth.open("a") as f:
        f.write(done.stdout)
    return done.stderr.strip().rsplit(": ", 1)[-1]


@pytest.fixture(scope="session")
def deploy_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """File name -> a file made for it, for every path the deploy/ commands name."""
    d = tmp_path_factory.mktemp("deploy-secrets")
    tls = d / "tls"
    auth = d / "auth.toml"
    auth.write_text("")
    tokens = {
        "join-token": _token(["--agent", "--name", "agents"], auth),
        "metrics-token": _token(["--metrics", "--name", "prometheus"], auth),
        "admin-token": _token(["--tenant", "ops", "--admin"], auth),
    }
    for name, token in tokens.items():
        (d / name).write_text(token + "\n")
    _deerflow(["certs", str(tls), *(a for h in CERT_HOSTS for a in ("--host", h))])
    return {
        "auth.toml": auth,
        "join-token": d / "join-token",
        "metrics-token": d / "metrics-token",
        "admin-token": d / "admin-token",
        "ca.pem": tls / "ca.pem",
        "controller.pem": tls / "controller.pem",
        "controller.key": tls / "controller.key",
        Path(HEALTHCHECK_IN_IMAGE).name: HEALTHCHECK,
        # The example config files the systemd units pass with --config, read as shipped.
        "controller.toml": DEPLOY / "controller.toml",
        "agent.toml": DEPLOY / "agent.toml",
    }
