"""Start and stop child processes of this interpreter: the agents of embedded mode
(``--local-agents``).

Processes are started with this interpreter (``python -m ...``), so they run the same installed
code; each is stopped by its own pid. :class:`ManagedProcess` is also the base of the launchers
the benchmarks, the demo and the tests use (``deerflow_bench``), whose controllers and simulators
announce their address in a ready line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Self


class ManagedProcess:
    """A child process with its output streamed to our stderr (or discarded)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        quiet: bool,
        env: Mapping[str, str] | None = None,
        piped: bool = False,
        wrapper: Sequence[str] = (),
    ) -> Self:
        """Run ``python -m module *args`` with this interpreter; ``piped``: its stdout comes to
        us (read it with :meth:`_await_ready_line`), else it is inherited. ``quiet`` sets the
        daemons' log level to WARNING unless the environment says otherwise. ``wrapper``: a
        command that runs the interpreter in the same process (valgrind, for the benchmarks'
        instruction counts), placed before it."""
        proc = await asyncio.create_subprocess_exec(
            *wrapper,
            sys.executable,
            "-m",
            module,
            *args,
            stdout=asyncio.subprocess.PIPE if piped else None,
            env=_env(quiet, env),
        )
        return cls(proc, name)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def wait(self, timeout_s: float | None = None) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def _await_ready_line(self, prefix: str, timeout_s: float) -> str:
        """Read stdout until the line starting with ``prefix``; return the rest of it. Stops
        the process if it exits or stays silent for ``timeout_s``. Later output is drained."""
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                line = await asyncio.wait_for(stdout.readline(), timeout_s)
                if not line:
                    code = await self.proc.wait()
                    raise RuntimeError(f"{self.name} exited with {code} before it was ready")
                text = line.decode().strip()
                if text.startswith(prefix):
                    break
        except BaseException:
            await self.stop(grace_s=2.0)
            raise
        self._pump = asyncio.get_running_loop().create_task(_drain(stdout))
        return text[len(prefix) :]

    async def stop(self, grace_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await self.proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 1.0)
        return self.proc.returncode if self.proc.returncode is not None else -1


def _env(quiet: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    if quiet:
        env.setdefault("DEERFLOW_LOG_LEVEL", "WARNING")
    return env


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


class AgentProcess(ManagedProcess):
    """``deerflow-agent`` connected to ``controller`` (one address, or several comma-separated)."""

    @classmethod
    async def start(
        cls,
        controller: str,
        agent_id: str,
        args: Sequence[str] = (),
        *,
        quiet: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> AgentProcess:
        module_args = ["--controller", controller, "--id", agent_id, *args]
        return await cls.spawn(agent_id, "deerflow_agent", module_args, quiet=quiet, env=env)


PRESTART_MODULE = "deerflow_agent._prestart"
"""An agent that imports itself, then waits for its command line on stdin (embedded mode)."""


class PrestartedAgent:
    """A ``deerflow-agent`` process started before its arguments are known: it imports the
    agent while the controller starts, then :meth:`hand_over` gives it its command line and
    environment additions (one JSON line on its stdin). Spawned with ``subprocess`` (the
    controller has no event loop yet, and no gRPC threads a fork could catch holding a lock);
    stopped by its own pid."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.name = "local agent (starting)"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", PRESTART_MODULE],
            stdin=subprocess.PIPE,
            env=_env(False, env),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def hand_over(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> bool:
        """Send the agent its arguments; False when it has already exited (its error is on
        stderr). Does not block beyond one small pipe write."""
        self.name = name
        stdin = self.proc.stdin
        assert stdin is not None
        line = json.dumps({"args": list(args), "env": dict(env)}) + "\n"
        try:
            stdin.write(line.encode())
            stdin.close()
        except BrokenPipeError:
            return False
        return True

    async def stop(self, grace_s: float = 10.0) -> int:
        """SIGTERM (before the hand-over: closing stdin, which ends it quietly), then SIGKILL
        after ``grace_s``; returns the exit code."""
        proc = self.proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        elif proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return await asyncio.to_thread(proc.wait)
