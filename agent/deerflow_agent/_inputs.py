"""The outputs of its dependencies that a task asked for (``Task(inputs=...)``), as its io
handler reads them: ``ctx.inputs``, a read-only mapping of task id to bytes in ``depends_on``
order, with :meth:`Inputs.json` and :meth:`Inputs.text`. No gRPC here: an input sent by
reference is fetched through the :data:`InputFetcher` the session supplies."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from deerflow_common.errors import AttemptKey

from ._errors import HandlerError

__all__ = ["NO_INPUTS", "InputFetcher", "InputRef", "Inputs", "resolve_inputs"]


@dataclass(frozen=True, slots=True)
class InputRef:
    """One input as assigned: inline bytes, or a reference (size and SHA-256) to fetch."""

    task_id: str
    data: bytes = b""
    size: int = 0
    reference: bool = False
    sha256: str = ""


InputFetcher = Callable[[AttemptKey, InputRef], Awaitable[bytes]]
"""Fetch a referenced input's bytes for an attempt (checked against its size and digest);
raises :class:`~deerflow_agent.HandlerError` (retryable) when it cannot."""


class Inputs(Mapping[str, bytes]):
    """The dependencies' outputs a task asked for: ``ctx.inputs["search-3"]`` is that task's
    output as bytes; iteration follows ``depends_on`` order. Empty when the task asked for
    none. Read-only."""

    __slots__ = ("_data",)

    def __init__(self, items: Iterable[tuple[str, bytes]] = ()) -> None:
        self._data: dict[str, bytes] = dict(items)

    def __getitem__(self, task_id: str) -> bytes:
        try:
            return self._data[task_id]
        except KeyError:
            asked = ", ".join(repr(k) for k in self._data) or "none"
            raise KeyError(
                f"no input {task_id!r}: the task asked for {asked}; name it in the task's "
                "inputs (and depends_on)"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def json(self, task_id: str) -> Any:
        """That dependency's output decoded as JSON (``json.JSONDecodeError`` if it is not)."""
        return json.loads(self[task_id])

    def text(self, task_id: str) -> str:
        """That dependency's output decoded as UTF-8."""
        return self[task_id].decode()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {len(v)} bytes" for k, v in self._data.items())
        return f"Inputs({sizes})"


NO_INPUTS = Inputs()


async def resolve_inputs(
    key: AttemptKey, refs: Iterable[InputRef], fetch: InputFetcher | None
) -> Inputs:
    """The attempt's inputs with every reference fetched, in the order assigned."""
    items: list[tuple[str, bytes]] = []
    for ref in refs:
        if not ref.reference:
            items.append((ref.task_id, ref.data))
            continue
        if fetch is None:
            raise HandlerError(
                f"input {ref.task_id!r} ({ref.size} bytes) was sent by reference and this "
                "runtime cannot fetch it"
            )
        items.append((ref.task_id, await fetch(key, ref)))
    return Inputs(items)
