"""What the daemons import to start (issue #19): heavy modules that only some features use are
loaded when those features are, not before; and they still load when used."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """The ``modules`` a fresh interpreter has loaded after running ``code``."""
    loaded = f"' '.join(m for m in {modules!r} if m in sys.modules)"
    probe = f"{code}\nimport sys\nprint()\nprint({loaded})"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return out.splitlines()[-1].split() if out.strip() else []


@pytest.mark.parametrize(
    ("entry", "not_loaded"),
    [
        # The controller's command line, up to where it spawns its local agents: nothing they
        # could import side by side with it (numpy, gRPC, aiohttp), nor etcd (HA only),
        # certificate parsing (TLS only) or rich (the CLI's tables).
        (
            "import deerflow_controller.main",
            ("numpy", "grpc", "aiohttp", "aetcd", "cryptography", "rich"),
        ),
        (
            # The server without its HTTP side: aiohttp is loaded when that is served.
            "import deerflow_controller.service.server",
            ("aiohttp", "aetcd", "cryptography", "rich", "deerflow_controller.ha.leadership"),
        ),
        # The operator's command line: aiohttp only for `deerflow top` and `deerflow sim`.
        ("import deerflow_controller.cli", ("aiohttp", "numpy", "aetcd")),
        # The agent: aiohttp and yarl (the first HTTP request), etcd, certificates.
        ("import deerflow_agent._prestart", ("aiohttp", "yarl", "aetcd", "cryptography")),
    ],
)
def test_a_daemon_starts_without_the_modules_of_features_it_does_not_use(
    entry: str, not_loaded: tuple[str, ...]
) -> None:
    assert _loaded_after(entry, not_loaded) == []


@pytest.mark.parametrize(
    ("use", "module"),
    [
        ("from deerflow_common.etcd import EtcdClient", "aetcd"),
        ("from deerflow_controller.ha import HaRunner, LeaderGate", "aetcd"),
        ("from deerflow_common.tls import make_certificates", "cryptography"),
        ("from deerflow_simulator import Simulator", "aiohttp"),
        ("from deerflow_common.tls import aio_channel", "grpc"),
        ("from deerflow_controller.cache import ResultCache", "numpy"),
        ("from deerflow_controller.core.predictor import Predictor\nPredictor()", "numpy"),
        (
            "import asyncio\nfrom deerflow_agent._http import client\n"
            "async def main():\n    await client().close()\nasyncio.run(main())",
            "aiohttp",
        ),
        ("from deerflow_agent._redact import display_url\ndisplay_url('http://a/b?c=d')", "yarl"),
        (
            "from deerflow_controller.jobs_cli import print_jobs\n"
            "from rich.console import Console\n"
            "from deerflow_protos import admin_pb2\n"
            "print_jobs(Console(), admin_pb2.JobList(), 'x')",
            "rich",
        ),
    ],
)
def test_a_lazily_loaded_module_is_there_when_its_feature_is_used(use: str, module: str) -> None:
    assert _loaded_after(use, (module,)) == [module]


def test_the_lazy_packages_still_name_everything_they_export() -> None:
    import deerflow_common.etcd as etcd
    import deerflow_common.tls as tls
    import deerflow_controller.ha as ha

    for package in (etcd, tls, ha):
        missing = [name for name in package.__all__ if getattr(package, name, None) is None]
        assert missing == [], package.__name__
