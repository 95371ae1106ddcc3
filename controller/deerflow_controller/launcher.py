"""Start and stop real controller and agent processes: for the demo, the benchmarks and tests.

Processes are started with this interpreter (``python -m ...``), so they run the same installed
code; each is stopped by its own pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from types import TracebackType

READY_PREFIX = "deerflow-controller listening on "


class ManagedProcess:
    """A child process with its output streamed to our stderr (or discarded)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self._pump: asyncio.Task[None] | None = None

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


def _env(quiet: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if quiet:
        env.setdefault("DEERFLOW_LOG_LEVEL", "WARNING")
    return env


class ControllerProcess(ManagedProcess):
    """``deerflow-controller`` on a free loopback port; ``address`` is read from its ready line."""

    address: str = ""

    @classmethod
    async def start(
        cls,
        args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        quiet: bool = True,
        ready_timeout_s: float = 30.0,
    ) -> ControllerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deerflow_controller.main",
            "--host",
            host,
            "--port",
            "0",
            *args,
            stdout=asyncio.subprocess.PIPE,
            env=_env(quiet),
        )
        self = cls(proc, "deerflow-controller")
        assert proc.stdout is not None
        try:
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout_s)
                if not line:
                    code = await proc.wait()
                    raise RuntimeError(
                        f"deerflow-controller exited with {code} before it was ready"
                    )
                text = line.decode().strip()
                if text.startswith(READY_PREFIX):
                    self.address = text[len(READY_PREFIX) :]
                    break
        except BaseException:
            await self.stop(grace_s=2.0)
            raise
        self._pump = asyncio.get_running_loop().create_task(_drain(proc.stdout))
        return self


class AgentProcess(ManagedProcess):
    @classmethod
    async def start(
        cls,
        controller: str,
        agent_id: str,
        args: Sequence[str] = (),
        *,
        quiet: bool = True,
    ) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deerflow_agent",
            "--controller",
            controller,
            "--id",
            agent_id,
            *args,
            env=_env(quiet),
        )
        return cls(proc, agent_id)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


class Cluster:
    """A controller plus ``agents`` agent processes, as an async context manager."""

    def __init__(
        self,
        agents: int = 2,
        *,
        agent_args: Sequence[str] = (),
        controller_args: Sequence[str] = (),
        quiet: bool = True,
    ) -> None:
        self.n_agents = agents
        self.agent_args = list(agent_args)
        self.controller_args = list(controller_args)
        self.quiet = quiet
        self.controller: ControllerProcess | None = None
        self.agents: list[AgentProcess] = []

    @property
    def address(self) -> str:
        assert self.controller is not None
        return self.controller.address

    async def __aenter__(self) -> Cluster:
        self.controller = await ControllerProcess.start(self.controller_args, quiet=self.quiet)
        try:
            for i in range(self.n_agents):
                await self.add_agent(f"agent-{i + 1}")
        except BaseException:
            await self.stop()
            raise
        return self

    async def add_agent(self, agent_id: str, args: Sequence[str] = ()) -> AgentProcess:
        agent = await AgentProcess.start(
            self.address, agent_id, [*self.agent_args, *args], quiet=self.quiet
        )
        self.agents.append(agent)
        return agent

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)
        if self.controller is not None:
            await self.controller.stop()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
