"""Three handlers that show the plugin contract (docs/HANDLERS.md):

- ``wordcount`` (io): counts the words of ``{"texts": [...]}``, reporting progress per text. Its
  traits say it is deterministic (cacheable) and that the texts are independent items the
  controller may split across agents; ``merge_counts`` joins the parts' outputs.
- ``tally`` (io): reads the outputs of the tasks it depends on (``ctx.inputs``) and returns the
  most common words over all of them.
- ``digest`` (cpu): SHA-256 of the payload, run in the agent's process pool.

Every refusal of a payload is a :class:`FatalError` naming the field, so the task fails at once
with a sentence the submitter can act on; a passing failure is a :class:`HandlerError`, which
the controller retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from deerflow_agent import FatalError, HandlerError, TaskContext, handler

__all__ = ["digest", "merge_counts", "tally", "wordcount"]

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
MAX_TEXTS = 10_000
"""Most texts one task may carry: a bound on the work a single payload can ask for."""


def _object(name: str, payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object, or a FatalError saying what was wrong with it."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FatalError(f"{name}: the payload is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise FatalError(f"{name}: the payload must be a JSON object, got {type(doc).__name__}")
    return doc


def _texts(doc: dict[str, Any]) -> list[str]:
    texts = doc.get("texts")
    if not isinstance(texts, list):
        raise FatalError('wordcount: payload field "texts" must be a list of strings')
    if len(texts) > MAX_TEXTS:
        raise FatalError(f'wordcount: "texts" has {len(texts)} entries; at most {MAX_TEXTS}')
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise FatalError(f'wordcount: "texts"[{i}] must be a string, got {type(text).__name__}')
    return texts


def merge_counts(outputs: Sequence[bytes | None]) -> bytes:
    """Joins the outputs of a split ``wordcount`` task's parts (None: a part that failed, when
    the submitter asked for partial results). Runs in the controller: quick, no I/O."""
    counts: Counter[str] = Counter()
    texts = 0
    for out in outputs:
        if out is None:
            continue
        doc = json.loads(out)
        counts.update(doc["counts"])
        texts += doc["texts"]
    return json.dumps({"counts": dict(counts), "texts": texts}, sort_keys=True).encode()


@handler(
    "wordcount",
    cacheable=True,
    items_field="texts",
    merger=merge_counts,
    default_duration_s=0.001,
)
async def wordcount(ctx: TaskContext, payload: bytes) -> bytes:
    """Count the words of {"texts": [str, ...]}: {"counts": {word: n}, "texts": n}."""
    doc = _object("wordcount", payload)
    texts = _texts(doc)
    # A stand-in for a flaky upstream, so the guide can show a retry: the task fails with a
    # retryable error until its attempt number reaches the payload's "available_from_attempt".
    available_from = doc.get("available_from_attempt", 1)
    if not isinstance(available_from, int) or isinstance(available_from, bool):
        raise FatalError('wordcount: "available_from_attempt" must be an integer')
    if ctx.attempt < available_from:
        raise HandlerError(
            f"wordcount: the word service is unavailable on attempt {ctx.attempt}",
            retry_after_s=0.1,
        )
    counts: Counter[str] = Counter()
    for i, text in enumerate(texts):
        counts.update(w.lower() for w in _WORD.findall(text))
        # Progress is a sign of life (it keeps a task with heartbeat_timeout_s alive) and shows
        # in `deerflow watch --all-events`; the agent sends at most one per attempt per 0.5 s.
        ctx.progress((i + 1) / len(texts), f"{i + 1}/{len(texts)} texts")
        await asyncio.sleep(0)  # let the agent's other attempts run between texts
    return json.dumps({"counts": dict(counts), "texts": len(texts)}, sort_keys=True).encode()


@handler("tally", default_duration_s=0.001)
async def tally(ctx: TaskContext, payload: bytes) -> bytes:
    """The most common words over the wordcount outputs this task reads: {"top": n} (10)."""
    doc = _object("tally", payload) if payload else {}
    top = doc.get("top", 10)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 1000:
        raise FatalError('tally: "top" must be an integer from 1 to 1000')
    if not ctx.inputs:
        raise FatalError(
            "tally: no inputs to read; submit it with depends_on=[...] and inputs='all' on the "
            "wordcount tasks it sums"
        )
    counts: Counter[str] = Counter()
    for task_id in ctx.inputs:
        try:
            counts.update(ctx.inputs.json(task_id)["counts"])
        except (ValueError, KeyError, TypeError):
            raise FatalError(
                f"tally: input {task_id!r} is not a wordcount output (no 'counts' object)"
            ) from None
    ctx.logger.info("tallied %d inputs, %d distinct words", len(ctx.inputs), len(counts))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return json.dumps({"top": [[w, n] for w, n in ranked]}).encode()


@handler("digest", kind="cpu", default_duration_s=0.001, default_cpu_s=0.001)
def digest(payload: bytes) -> bytes:
    """SHA-256 of the payload, computed in the agent's process pool: {"sha256": hex, "bytes": n}."""
    return json.dumps(
        {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    ).encode()
