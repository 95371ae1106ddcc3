"""Embedded mode: the controller starts and stops its own local agent processes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence

from deerflow_common.config_file import CONFIG_ENV
from deerflow_controller.service.launcher import PrestartedAgent

log = logging.getLogger(__name__)

_AGENT_ENV = {CONFIG_ENV: ""}
"""What local agents do not inherit: the controller's own config file (its keys are not theirs;
an empty value is unset for click). Give them one with ``--agent-arg=--config=agent.toml``."""


class LocalAgents:
    """N ``deerflow-agent`` child processes connected to this controller.

    Constructing it spawns them, at once: they import the agent while the controller imports
    and binds (the first thing ``deerflow-controller`` does with ``--local-agents``). They
    connect once :meth:`start` has told them where; until then they wait, and end quietly if
    the controller exits first. Stopping sends SIGTERM (the agents drain), then SIGKILL after
    ``grace_s``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs = [PrestartedAgent(_AGENT_ENV) for _ in range(count)]

    async def start(
        self, address: str, extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        """Tell each agent its controller (``address``), id and ``extra_args``; ``env``: added
        to their environment (with --auth-file: their join token). Does not block."""
        for i, proc in enumerate(self.procs):
            agent_id = f"local-{i + 1}-{os.getpid()}"
            args = ["--controller", address, "--id", agent_id, *extra_args]
            if not proc.hand_over(agent_id, args, {**(env or {}), **_AGENT_ENV}):
                log.warning("local agent %s exited before it started (see above)", agent_id)

    async def stop(self, grace_s: float = 10.0) -> None:
        await asyncio.gather(*(p.stop(grace_s) for p in self.procs), return_exceptions=True)
