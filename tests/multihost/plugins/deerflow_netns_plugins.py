"""Handlers for the multi-host tests, installed with --handler deerflow_netns_plugins:NAME."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

from deerflow_agent import TaskContext, handler


@handler("tagged_sleep")
async def tagged_sleep(ctx: TaskContext, payload: bytes) -> bytes:
    """Sleep ``{"seconds": s}``, then, given ``"until": path``, wait for that file to exist (the
    test's release: every host sees the same /tmp). The output names the task, the attempt and
    the agent that ran it ($DFP_AGENT) and a fresh run id, so every result traces to the one run
    that made it and two runs never give the same output."""
    doc = json.loads(payload)
    await asyncio.sleep(float(doc["seconds"]))
    until = doc.get("until")
    # A file is the one thing the test and every namespace share; look every 50 ms (a stat of
    # a local path: not worth a thread).
    while until and not os.path.exists(until):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
    agent = os.environ.get("DFP_AGENT", "")
    run = uuid.uuid4().hex
    out = {"task": ctx.task_id, "attempt": ctx.attempt, "agent": agent, "run": run}
    return json.dumps(out).encode()
