"""Handlers for the multi-host tests, installed with --handler deerflow_netns_plugins:NAME."""

from __future__ import annotations

import asyncio
import json
import os

from deerflow_agent import TaskContext, handler


@handler("tagged_sleep")
async def tagged_sleep(ctx: TaskContext, payload: bytes) -> bytes:
    """Sleep ``{"seconds": s}``; the output names the task, the attempt and the agent that ran
    it ($DFP_AGENT), so every result can be traced to the one run that produced it."""
    await asyncio.sleep(float(json.loads(payload)["seconds"]))
    agent = os.environ.get("DFP_AGENT", "")
    return json.dumps({"task": ctx.task_id, "attempt": ctx.attempt, "agent": agent}).encode()
