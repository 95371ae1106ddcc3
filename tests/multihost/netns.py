"""Linux network namespaces joined by a switch: hosts with addresses of their own, and links the
test can cut and heal.

Each host is a namespace with one interface, ``eth0``, the end of a veth pair whose other end
is a port of the bridge ``br0`` inside a "switch" namespace; nothing is added to the root
namespace, so the test's traffic never leaves these namespaces. Names carry the test process's
pid (``dfp<pid>-<host>``), so parallel pytest workers never collide; what a killed run left
behind is removed by the next run (namespaces whose pid is gone).

A cut is a pair of blackhole routes (``ip route add blackhole PEER/32`` on both sides): packets
between the two hosts are dropped silently, as on a broken link, while every other path stays
up. Healing deletes the routes.

Processes run as ``ip netns exec NS argv...``: ``ip`` execs the command in place, so the pid
the test holds is the daemon's own and it is stopped by that pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deerflow_controller.service.launcher import ManagedProcess

SUBNET = "10.77.0"
"""Every topology uses 10.77.0.0/24: each has a switch of its own, so they never meet."""

_NAME = re.compile(r"^dfp(\d+)-")


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``, EPERM, no veth): the
    message says why, for ``pytest.skip``."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the suite as root to include them"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to create network namespaces"
    return None


def remove_abandoned() -> None:
    """Delete the namespaces of earlier runs whose process is gone (a killed pytest worker)."""
    listed = _ip("netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split(" ", 1)[0]
        found = _NAME.match(name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _ip("netns", "del", name, check=False)
        except PermissionError:
            pass  # alive, someone else's


@dataclass
class Host:
    name: str
    """Short role name (``c1``, ``etcd``...)."""
    netns: str
    address: str
    """Its 10.77.0.x address."""


@dataclass
class Topology:
    """Hosts on one switch. ``create`` builds them (raising :class:`NamespacesUnavailable` when
    the kernel refuses), ``destroy`` removes every namespace it made."""

    hosts: Mapping[str, int]
    """Role name -> last octet of its address."""
    tag: str = field(default_factory=lambda: f"dfp{os.getpid()}")
    made: list[str] = field(default_factory=list)
    by_name: dict[str, Host] = field(default_factory=dict)
    cuts: set[tuple[str, str]] = field(default_factory=set)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def __getitem__(self, name: str) -> Host:
        return self.by_name[name]

    def create(self) -> None:
        try:
            self._add_netns(self.switch)
        except RuntimeError as e:
            raise NamespacesUnavailable(f"cannot create a network namespace: {e}") from None
        try:
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except RuntimeError as e:
            raise NamespacesUnavailable(f"cannot create a bridge in a namespace: {e}") from None
        for name, octet in self.hosts.items():
            ns = f"{self.tag}-{name}"
            self._add_netns(ns)
            port = f"e-{name}"
            try:
                _ip("-n", self.switch, "link", "add", port, "type", "veth",
                    "peer", "name", "eth0", "netns", ns)  # fmt: skip
            except RuntimeError as e:
                raise NamespacesUnavailable(f"cannot create a veth pair: {e}") from None
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            address = f"{SUBNET}.{octet}"
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            self.by_name[name] = Host(name, ns, address)

    def _add_netns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.made.append(ns)

    def destroy(self) -> None:
        """Delete every namespace made (their veths and the bridge go with them). Call after
        the processes inside have been stopped."""
        while self.made:
            _ip("netns", "del", self.made.pop(), check=False)
        self.by_name.clear()
        self.cuts.clear()

    # ------------------------------------------------------------------ partitions

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between hosts ``a`` and ``b`` (both directions)."""
        ha, hb = self[a], self[b]
        _ip("-n", ha.netns, "route", "add", "blackhole", f"{hb.address}/32")
        _ip("-n", hb.netns, "route", "add", "blackhole", f"{ha.address}/32")
        self.cuts.add((a, b))

    def heal(self, a: str, b: str) -> None:
        ha, hb = self[a], self[b]
        _ip("-n", ha.netns, "route", "del", "blackhole", f"{hb.address}/32", check=False)
        _ip("-n", hb.netns, "route", "del", "blackhole", f"{ha.address}/32", check=False)
        self.cuts.discard((a, b))

    def heal_all(self) -> None:
        for a, b in list(self.cuts):
            self.heal(a, b)

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self[host].netns, *argv]


class HostProcess(ManagedProcess):
    """A process inside a host's namespace, its output (stdout and stderr) copied to a log file;
    :meth:`ready` waits for a line containing a marker."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, log_path: Path) -> None:
        super().__init__(proc, name)
        self.log_path = log_path
        self._markers: dict[str, asyncio.Future[str]] = {}
        self.on_line: Callable[[str], None] | None = None
        """Called with each line of output (the driver's replies)."""

    @classmethod
    async def launch(
        cls,
        topology: Topology,
        host: str,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
    ) -> HostProcess:
        log_path = log_dir / f"{name}.log"
        proc = await asyncio.create_subprocess_exec(
            *topology.command(host, argv),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self = cls(proc, name, log_path)
        self._pump = asyncio.get_running_loop().create_task(self._copy_output())
        return self

    def watch_for(self, marker: str) -> asyncio.Future[str]:
        """A future of the first line (from now on) containing ``marker``."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._markers[marker] = future
        return future

    async def ready(self, marker: str, timeout_s: float) -> str:
        """Wait for a line containing ``marker`` (stop the process and raise when it exits or
        stays silent that long); returns the line."""
        future = self._markers.get(marker) or self.watch_for(marker)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except BaseException:
            await self.stop(grace_s=2.0)
            raise

    async def _copy_output(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        with self.log_path.open("ab") as log:
            while line := await stdout.readline():
                log.write(line)
                log.flush()
                text = line.decode(errors="replace")
                if self.on_line is not None:
                    self.on_line(text.strip())
                for marker, future in list(self._markers.items()):
                    if marker in text and not future.done():
                        future.set_result(text.strip())
        code = await self.proc.wait()
        for future in self._markers.values():
            if not future.done():
                future.set_exception(
                    RuntimeError(f"{self.name} exited with {code}; see {self.log_path}")
                )
                future.exception()  # retrieved: nobody may be waiting for it

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""
