"""The daemons and the ``deerflow`` command ask gRPC for its classic TCP endpoints before grpc is
imported (``deerflow_common.grpc_endpoints``); an operator's own ``GRPC_EXPERIMENTS`` wins, and
the locked grpcio knows every experiment named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deerflow_common.grpc_endpoints import CLASSIC_ENDPOINTS, ENV

ENTRY_MODULES = ("deerflow_controller.main", "deerflow_agent.main", "deerflow_controller.cli")

PROBE = """
import importlib, os, sys
importlib.import_module(sys.argv[1])
import grpc  # the daemon's own imports load it; make sure it is loaded here too
print(repr(os.environ.get({env!r})))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env.update(extra)
    return env


def _probe(module: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(env=ENV), module],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_entry_modules_choose_the_classic_endpoints(module: str) -> None:
    assert _probe(module, _env()) == repr(CLASSIC_ENDPOINTS)


@pytest.mark.parametrize("value", ["", "event_engine_client"])
def test_an_operators_value_wins(value: str) -> None:
    assert _probe("deerflow_controller.main", _env(**{ENV: value})) == repr(value)


def test_too_late_once_grpc_is_imported() -> None:
    code = (
        "import os, grpc\n"
        "from deerflow_common.grpc_endpoints import use_classic_endpoints\n"
        f"print(use_classic_endpoints(), repr(os.environ.get({ENV!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "False None"


def test_grpc_knows_every_experiment_named() -> None:
    """grpc prints "Unknown experiment: NAME" for a name it lacks (checked with a made-up one):
    a grpcio upgrade that drops one of ours fails here rather than silently changing nothing."""
    code = (
        "import grpc\n"
        "ch = grpc.insecure_channel('127.0.0.1:9')\n"
        "try:\n"
        "    grpc.channel_ready_future(ch).result(timeout=0.2)\n"
        "except grpc.FutureTimeoutError:\n"
        "    pass\n"
    )

    def stderr_with(value: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=_env(**{ENV: value}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stderr

    assert "Unknown experiment" in stderr_with(CLASSIC_ENDPOINTS + ",-no_such_experiment_here")
    assert "Unknown experiment" not in stderr_with(CLASSIC_ENDPOINTS)
