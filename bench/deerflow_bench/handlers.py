"""Handlers the inputs benchmark and tests install on agents (``--handler
deerflow_bench.handlers:NAME``): a producer of outputs of any size and readers of
``ctx.inputs`` that report what they received. Not part of the product."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from deerflow_agent import FatalError, Handler, HandlerKind, TaskContext, handler

__all__ = ["blob", "read_inputs", "read_inputs_items"]


def _doc(name: str, payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload or b"{}")
    except ValueError:
        raise FatalError(f"{name}: the payload is not JSON") from None
    if not isinstance(doc, dict):
        raise FatalError(f"{name}: the payload must be a JSON object")
    return doc


@handler("blob")
async def blob(ctx: TaskContext, payload: bytes) -> bytes:
    """Return {"bytes": N} bytes of a pattern seeded by {"seed": str} (default the task id):
    a producer of outputs of any size whose content differs per seed."""
    doc = _doc("blob", payload)
    size = doc.get("bytes", 0)
    if not isinstance(size, int) or not 0 <= size <= 1 << 30:
        raise FatalError(f"blob: 'bytes' must be an integer from 0 to 2**30, got {size!r}")
    seed = f"{doc.get('seed', ctx.task_id)}|".encode()
    return (seed * (size // len(seed) + 1))[:size]


def _report(ctx: TaskContext, digest: bool) -> dict[str, Any]:
    inputs = ctx.inputs
    out: dict[str, Any] = {
        "order": list(inputs),
        "sizes": {k: len(v) for k, v in inputs.items()},
        "heads": {k: v[:32].decode(errors="replace") for k, v in inputs.items()},
    }
    if digest:
        out["sha256"] = {k: hashlib.sha256(v).hexdigest() for k, v in inputs.items()}
    return out


@handler("read_inputs")
async def read_inputs(ctx: TaskContext, payload: bytes) -> bytes:
    """Report the inputs received: their order, sizes, first 32 bytes and (unless {"digest":
    false}) SHA-256; with {"fail_attempts": n}, fail the first n attempts (retries get the
    inputs again)."""
    doc = _doc("read_inputs", payload)
    if ctx.attempt <= int(doc.get("fail_attempts", 0)):
        from deerflow_agent import HandlerError

        raise HandlerError(f"read_inputs: failing attempt {ctx.attempt} as asked")
    report = _report(ctx, bool(doc.get("digest", True)))
    report["attempt"] = ctx.attempt
    return json.dumps(report).encode()


async def _read_inputs_items(ctx: TaskContext, payload: bytes) -> bytes:
    doc = _doc("read_inputs_items", payload)
    items = doc.get("items")
    if not isinstance(items, list):
        raise FatalError("read_inputs_items: 'items' must be a JSON array")
    await asyncio.sleep(float(doc.get("per_item_s", 0.0)) * len(items))
    report = _report(ctx, True)
    return json.dumps({"results": [{"item": i, "inputs": report} for i in items]}).encode()


read_inputs_items = Handler(
    "read_inputs_items",
    _read_inputs_items,
    HandlerKind.IO,
    description="Like read_inputs for each of {'items': [...]}: a task the controller splits.",
    items_field="items",
    default_duration_s=0.1,  # per item, as the work built-in: splits a few dozen items
)
