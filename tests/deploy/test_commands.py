"""Every command deploy/ runs for our daemons (the image's CMD and HEALTHCHECK, the compose
services, the Kubernetes containers and probes, the systemd units), run from the local virtual
environment with the same arguments: first through the daemon's own parser (every flag and value,
files must exist), then as real processes until they are ready: controllers on a real etcd
(`--etcd` pointed at the test's), agents joined to them, the simulator; and each one's health
check as written (the image's healthcheck.py with its URL, or a probe's GET) must pass.

What is changed to run here: addresses and ports (loopback, free ports: the health URLs follow),
etcd endpoints and key prefix, and file paths (mapped to certificates and tokens made by
`deerflow certs` and `deerflow token new`)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from deerflow_bench._launcher import ControllerProcess, SimulatorProcess
from deerflow_common.etcd import LocalEtcd
from deerflow_common.etcd.server import free_port
from deerflow_controller.service.launcher import AgentProcess, ManagedProcess

from ._commands import (
    HEALTHCHECK,
    DeployCommand,
    Health,
    all_commands,
    compose_commands,
    dockerfile_commands,
    flags,
    kubernetes_commands,
    map_paths,
    option,
    options,
    set_option,
    unit_commands,
)

COMMANDS = all_commands()
READY_TIMEOUT_S = 30.0


def test_every_daemon_is_run_by_every_way_to_deploy() -> None:
    sources = {c.source for c in COMMANDS}
    assert "Dockerfile:CMD" in sources
    for ways, daemons in (
        (compose_commands(), {"deerflow-controller", "deerflow-agent", "deerflow-sim"}),
        (kubernetes_commands(), {"deerflow-controller", "deerflow-agent"}),
        (unit_commands(), {"deerflow-controller", "deerflow-agent"}),
    ):
        assert daemons <= {c.daemon for c in ways}
    assert sum(c.daemon == "deerflow-controller" for c in compose_commands()) == 3  # 2 + dev
    assert sum(c.daemon == "deerflow-agent" for c in compose_commands()) == 3
    assert all(c.daemon for c in COMMANDS), [c.source for c in COMMANDS if not c.daemon]


@pytest.mark.parametrize("command", [pytest.param(c, id=c.id) for c in COMMANDS])
def test_the_daemon_parser_accepts_every_argument(
    command: DeployCommand, deploy_files: dict[str, Path]
) -> None:
    from ._commands import DAEMONS

    args = map_paths(command.args, deploy_files)
    with DAEMONS[command.daemon].make_context(command.daemon, list(args)) as ctx:
        assert ctx.params  # values too: a bad one raises click's UsageError/BadParameter


@pytest.mark.parametrize("command", [pytest.param(c, id=c.id) for c in COMMANDS])
def test_every_flag_is_one_the_daemon_has(command: DeployCommand) -> None:
    """Checked apart from the values: a misspelt flag fails by name."""
    known = options(command.daemon)
    unknown = [f for f in flags(command.args) if f not in known]
    assert not unknown, f"{command.daemon} has no option {unknown}"


# -- running them ---------------------------------------------------------------------------------


@dataclass
class Running:
    command: DeployCommand
    process: ManagedProcess
    ports: dict[str, int]
    """Container port as written -> the port it listens on here."""


def _controller_args(
    cmd: DeployCommand, files: dict[str, Path], etcd: str, prefix: str, ports: dict[str, int]
) -> list[str]:
    args = map_paths(cmd.args, files)
    ports["7400"], ports["7401"] = free_port(), free_port()
    args = set_option(args, "--host", "127.0.0.1")
    args = set_option(args, "--port", str(ports["7400"]))
    args = set_option(args, "--http-host", "127.0.0.1")
    args = set_option(args, "--http-port", str(ports["7401"]))
    if option(args, "--etcd") is not None:
        args = set_option(args, "--etcd", etcd)
        args = set_option(args, "--etcd-prefix", prefix)
    if option(args, "--advertise") is not None:
        args = set_option(args, "--advertise", f"127.0.0.1:{ports['7400']}")
    if option(args, "--config") is not None:
        # The example config keeps its cache in /var/lib/deerflow: here, beside the test's files.
        cache = files["auth.toml"].parent / f"cache-{ports['7400']}.sqlite"
        args = set_option(args, "--cache-file", str(cache))
    return args


def _agent_args(
    cmd: DeployCommand,
    files: dict[str, Path],
    etcd: str,
    prefix: str,
    controllers: list[str],
    ports: dict[str, int],
) -> list[str]:
    args = map_paths(cmd.args, files)
    ports["7402"] = free_port()
    args = set_option(args, "--controller", ",".join(controllers))
    if option(args, "--etcd") is not None:
        args = set_option(args, "--etcd", etcd)
        args = set_option(args, "--etcd-prefix", prefix)
    args = set_option(args, "--metrics-host", "127.0.0.1")
    return set_option(args, "--metrics-port", str(ports["7402"]))


def _local_url(url: str, ports: dict[str, int]) -> str:
    """``url`` with its port mapped to where the daemon listens here."""
    parts = urlsplit(url)
    port = ports.get(str(parts.port), parts.port)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


def _get(url: str) -> int:
    """The status of GET ``url`` (TLS unverified, as the kubelet probes); 0 when unreachable."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def _healthcheck(health: Health, ports: dict[str, int], files: dict[str, Path]) -> int:
    """Run a HEALTHCHECK/compose ``test`` command as written (paths and ports mapped)."""
    argv = map_paths(health.argv, files)
    assert Path(argv[0]).name.startswith("python") and argv[1] == str(HEALTHCHECK), argv
    url = argv[2] if len(argv) > 2 else health.env["DEERFLOW_HEALTH_URL"]
    env = {
        k: str(files[Path(v).name]) for k, v in health.env.items() if k.startswith("DEERFLOW_TLS")
    }
    done = subprocess.run(
        [sys.executable, str(HEALTHCHECK), _local_url(url, ports)],
        capture_output=True,
        text=True,
        timeout=15,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    return done.returncode


async def _eventually(what: str, check: object, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Call ``check()`` (in a thread) until it is true, for at most ``timeout_s``."""
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.05
    while not await asyncio.to_thread(check):
        assert loop.time() < deadline, f"not within {timeout_s:g} s: {what}"
        await asyncio.sleep(delay)  # polling a daemon's HTTP health, bounded by the deadline
        delay = min(delay * 2, 1.0)


async def _check_health(run: Running, files: dict[str, Path]) -> None:
    for health in run.command.health:
        if health.argv:
            await _eventually(
                f"{run.command.source}: {health.argv}",
                lambda h=health: _healthcheck(h, run.ports, files) == 0,
            )
        else:
            scheme = health.scheme.lower()
            port = run.ports[health.http_port]
            url = f"{scheme}://127.0.0.1:{port}{health.http_path}"
            await _eventually(f"{run.command.source}: probe {url}", lambda u=url: _get(u) == 200)


@contextlib.asynccontextmanager
async def _started(
    commands: list[DeployCommand], files: dict[str, Path], etcd: str
) -> AsyncIterator[list[Running]]:
    """Controllers first (on one fresh etcd prefix), then the simulator, then agents joined to
    the controllers; every process stopped on the way out."""
    prefix = f"/deploy-{uuid.uuid4().hex[:10]}/"
    running: list[Running] = []
    try:
        for cmd in (c for c in commands if c.daemon == "deerflow-controller"):
            ports: dict[str, int] = {}
            args = _controller_args(cmd, files, etcd, prefix, ports)
            proc = await ControllerProcess.start(args, ready_timeout_s=READY_TIMEOUT_S)
            running.append(Running(cmd, proc, ports))
        controllers = [f"127.0.0.1:{r.ports['7400']}" for r in running]
        for cmd in (c for c in commands if c.daemon == "deerflow-sim"):
            ports = {"7480": free_port()}
            args = set_option(
                set_option(cmd.args, "--host", "127.0.0.1"), "--port", str(ports["7480"])
            )
            sim = await SimulatorProcess.start(args, ready_timeout_s=READY_TIMEOUT_S)
            running.append(Running(cmd, sim, ports))
        for cmd in (c for c in commands if c.daemon == "deerflow-agent"):
            ports = {}
            args = _agent_args(cmd, files, etcd, prefix, controllers, ports)
            agent_id = option(args, "--id") or "agent"
            agent = await AgentProcess.start(controllers[0], agent_id, args)
            running.append(Running(cmd, agent, ports))
        yield running
    finally:
        await asyncio.gather(*(r.process.stop(grace_s=5.0) for r in reversed(running)))


def _groups() -> list[tuple[str, list[DeployCommand]]]:
    compose = compose_commands()
    return [
        ("image", dockerfile_commands()),
        ("compose", [c for c in compose if "[" not in c.source and c.daemon != "deerflow-sim"]),
        ("compose-simulator", [c for c in compose if c.daemon == "deerflow-sim"]),
        ("compose-dev", [c for c in compose if "[dev]" in c.source]),
        ("kubernetes", kubernetes_commands()),
        ("systemd", unit_commands()),
    ]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("commands", [pytest.param(cs, id=name) for name, cs in _groups()])
async def test_the_daemons_run_to_readiness_with_their_health_checks(
    commands: list[DeployCommand], deploy_files: dict[str, Path], etcd_server: LocalEtcd
) -> None:
    async with _started(commands, deploy_files, etcd_server.endpoint) as running:
        for run in running:
            if run.command.daemon == "deerflow-agent":
                # Joined: an agent is ready once the leader has accepted it.
                url = f"http://127.0.0.1:{run.ports['7402']}/readyz"
                await _eventually(f"{run.command.source} joins", lambda u=url: _get(u) == 200)
            await _check_health(run, deploy_files)
        assert all(r.process.returncode is None for r in running)


@pytest.mark.parametrize("scheme", ["http", "https", "tcp"])
def test_the_health_check_fails_in_one_line_when_nothing_answers(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}/healthz"
    done = subprocess.run(
        [sys.executable, str(HEALTHCHECK), url], capture_output=True, text=True, timeout=15
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"unhealthy: {url}: ") and done.stderr.count("\n") == 1
