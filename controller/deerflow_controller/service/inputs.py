"""How the inputs a task asked for travel to its agent (issue #15; docs/INPUTS.md).

Small outputs ride inline in the task's ``Assignment``. An output above ``inline_bytes`` (256
KiB by default), or any output once the ``AssignmentBatch`` carries ``batch_inline_bytes`` inline
already, travels by reference (its size and SHA-256): the agent fetches it in 1 MiB chunks with
``AgentService.FetchInput`` before it calls the handler. So a batch stays far below gRPC's
message limit whatever the fan-in, one big output does not hold up the assignments and cancels
queued behind it on the agent's stream, and the bytes cross the wire once per attempt
that reads them, from the leader, instead of travelling inside every message on the way.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator, Sequence

from deerflow_controller.core.inputs import fetchable_input, wanted_inputs
from deerflow_controller.core.model import Job, Task
from deerflow_controller.core.types import AttemptResult
from deerflow_controller.core.validation import quote
from deerflow_protos import agent_pb2

__all__ = ["FETCH_CHUNK_BYTES", "InputPacker", "hash_for_readers", "input_chunks"]

FETCH_CHUNK_BYTES = 1 << 20
"""Bytes per ``InputChunk``: few messages per output, small enough to interleave with other
calls on the channel; 4 MiB chunks measured slower (docs/BENCHMARKS.md, issue #15)."""


class InputPacker:
    """Fills each assignment's inputs. One per shell; :meth:`start_batch` before each agent's
    batch. A referenced output is hashed once (``Task.output_sha256``), however many readers
    and attempts it goes to."""

    __slots__ = ("_left", "batch_inline_bytes", "inline_bytes")

    def __init__(self, inline_bytes: int, batch_inline_bytes: int) -> None:
        self.inline_bytes = inline_bytes
        self.batch_inline_bytes = batch_inline_bytes
        self._left = batch_inline_bytes

    def start_batch(self) -> None:
        self._left = self.batch_inline_bytes

    def fill(self, task: Task, out: agent_pb2.Assignment) -> None:
        """Add the outputs ``task`` (or, for a part of a split task, its parent) asked for to
        ``out``, in ``depends_on`` order."""
        spec = task.spec if task.parent is None else task.parent.spec
        tasks = task.job.tasks
        add = out.inputs.add
        for dep_id in wanted_inputs(spec):
            dep = tasks[dep_id]
            data = dep.output
            size = len(data)
            if size <= self.inline_bytes and size <= self._left:
                self._left -= size
                add(task_id=dep_id, data=data, size=size)
                continue
            digest = dep.output_sha256
            if not digest:
                digest = dep.output_sha256 = hashlib.sha256(data).hexdigest()
            add(task_id=dep_id, size=size, reference=True, sha256=digest)


def input_chunks(
    job: Job, task_id: str, attempt: int, dep_id: str, offset: int, *, holder: str | None = None
) -> Iterator[bytes] | str:
    """The chunks of the output ``dep_id`` from byte ``offset`` for the current attempt of
    ``task_id``, held by agent ``holder`` (see ``core.inputs.fetchable_input``), or the reason
    it cannot have it."""
    found = fetchable_input(job, task_id, attempt, dep_id, holder=holder)
    if isinstance(found, str):
        return found
    if offset > len(found):
        return f"offset {offset} is past the end of the {len(found)}-byte output of {quote(dep_id)}"
    view = memoryview(found)
    return (
        bytes(view[i : i + FETCH_CHUNK_BYTES])
        for i in range(offset, max(offset + 1, len(found)), FETCH_CHUNK_BYTES)
    )


async def hash_for_readers(
    results: Sequence[AttemptResult], job: Callable[[str], Job | None], inline_bytes: int
) -> None:
    """Hash, in a worker thread, the outputs among ``results`` that readers will fetch by
    reference (larger than ``inline_bytes``, of a task some dependent reads), so that the
    digest the assignments name costs the controller's event loop nothing (SHA-256 takes about
    17 ms per 10 MB). Each result's ``output_sha256`` is set; returns once all are hashed."""
    todo = []
    for r in results:
        if r.ok and len(r.output) > inline_bytes:
            found = job(r.key[0])
            task = found.tasks.get(r.key[1]) if found is not None else None
            if task is not None and task.consumers > 0:
                todo.append(r)
    if todo:
        digests = await asyncio.to_thread(
            lambda: [hashlib.sha256(r.output).hexdigest() for r in todo]
        )
        for r, digest in zip(todo, digests, strict=True):
            r.output_sha256 = digest


def _sha256_all(outputs: list[bytes]) -> list[str]:
    return [hashlib.sha256(data).hexdigest() for data in outputs]
