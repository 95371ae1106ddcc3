"""Embedded mode: the controller starts and stops its own local agent processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

from deerflow_common.config_file import CONFIG_ENV
from deerflow_controller.service.launcher import AgentProcess

_AGENT_ENV = {CONFIG_ENV: ""}
"""What local agents do not inherit: the controller's own config file (its keys are not theirs;
an empty value is unset for click). Give them one with ``--agent-arg=--config=agent.toml``."""


class LocalAgents:
    """N ``deerflow-agent`` child processes connected to this controller.

    Stopping sends SIGTERM (the agents drain), then SIGKILL after ``grace_s``."""

    def __init__(
        self,
        address: str,
        count: int,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.address = address
        self.count = count
        self.extra_args = list(extra_args)
        self.env = {**(env or {}), **_AGENT_ENV}
        """Added to the agents' environment (with --auth-file: their join token); the
        controller's own config file is taken out."""
        self.procs: list[AgentProcess] = []

    async def start(self) -> None:
        for i in range(self.count):
            agent_id = f"local-{i + 1}-{os.getpid()}"
            self.procs.append(
                await AgentProcess.start(
                    self.address, agent_id, self.extra_args, quiet=False, env=self.env
                )
            )

    async def stop(self, grace_s: float = 10.0) -> None:
        await asyncio.gather(*(p.stop(grace_s) for p in self.procs), return_exceptions=True)
