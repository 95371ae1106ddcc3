"""What a handler is: its declaration (:func:`handler`, :class:`Handler` and its traits), its
calling conventions, and the checks the runners share.

A handler is a function registered under a name that the controller puts in assignments. The
agent calls it with the task's payload (opaque bytes: data, never code) and sends back the bytes it
returns.

Two kinds, two calling conventions:

- **io** (the default): ``async def fn(ctx: TaskContext, payload: bytes) -> bytes | HandlerResult``,
  run as one asyncio task on the agent's event loop. It must not block the loop: use async
  clients, or ``asyncio.to_thread`` for the odd blocking call.
- **cpu**: ``def fn(payload: bytes) -> bytes | HandlerResult``, run in the agent's process pool. It
  must be defined at module level (the pool imports it by name in a worker process), and its
  output and exceptions must be picklable.

Execution is **at-least-once**: an attempt may be cut short by a timeout, a lost agent or a
controller failover and the task then runs again, possibly on another agent, possibly while the
first run is still going. Handlers with side effects must be idempotent; ``(job_id, task_id)``
from the :class:`TaskContext` is the idempotency key.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict, Unpack, cast, overload

from ._context import TaskContext
from ._errors import FatalError

__all__ = [
    "DEFAULT_SIMILARITY_THRESHOLD",
    "CpuHandlerFn",
    "Handler",
    "HandlerKind",
    "HandlerOptions",
    "HandlerResult",
    "HandlerTraits",
    "IoHandlerFn",
    "Merger",
    "Splitter",
    "coerce_output",
    "cpu_target",
    "handler",
    "resolve_function",
]


class HandlerKind(enum.Enum):
    """Where a handler runs."""

    IO = "io"
    """On the agent's event loop, as an asyncio task: network calls, subprocess waits."""

    CPU = "cpu"
    """In the agent's process pool: hashing, parsing, numeric work that would block the loop."""


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """A richer return value than plain bytes.

    ``metadata`` carries small string facts about the run (HTTP status, rate-limit headers, token
    usage; keys from :mod:`deerflow_common.signals`) to ``Result.metadata``, for the controller's
    rate limiter and stats; ``output`` is what the task returns.
    """

    output: bytes
    metadata: dict[str, str] = field(default_factory=dict)


IoHandlerFn: TypeAlias = Callable[[TaskContext, bytes], Awaitable["bytes | HandlerResult"]]
CpuHandlerFn: TypeAlias = Callable[[bytes], "bytes | HandlerResult"]
Splitter: TypeAlias = Callable[[bytes], Sequence[object]]
"""``splitter(payload) -> parts``: a task's payload cut into parts for the same handler, in
order. A part is its payload as ``bytes``, or an object with a ``payload: bytes`` attribute and
optionally ``depends_on`` (indices of earlier parts: a pipeline), ``items`` (the parent's item
indices it carries) and ``est_duration_s`` (the controller decomposer's ``SplitPart``). Runs in
the controller's scheduling core, only where the handler's package is installed there: quick
and pure, no I/O. Whatever it raises fails the task with SPLIT_ERROR naming the handler."""
Merger: TypeAlias = Callable[[Sequence["bytes | None"]], bytes]
"""``merger(outputs) -> output``: the parts' outputs in part order (None for a part that failed,
only when the submitter asked for partial results) joined into the output of the whole task.
Same rules as :data:`Splitter`."""

DEFAULT_SIMILARITY_THRESHOLD = 0.9
"""Similarity a handler that names a ``similarity_field`` gets unless it gives its own: high, so
that templated siblings ("JD delivery market share" vs "Meituan delivery market share") are not
served each other's answers. Chosen from the cache's precision measurement (issue #6,
docs/BENCHMARKS.md): the lowest threshold whose false hits stay under 0.5 % (0.17 % per hit on
the docs/WORKLOAD.md stream; 0.92 % at 0.85)."""

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
    )


@dataclass(frozen=True, slots=True)
class Handler:
    """A named, installed handler. Build one with :func:`handler` or directly.

    ``slots`` caps concurrent attempts of this handler on one agent (0 = the agent's total; cpu
    handlers are further capped by the process pool size). Execution is at-least-once: handlers
    with side effects must be idempotent. Payloads are data, never code.

    The remaining fields are *traits*: facts the handler declares about itself that the
    controller's policies use (sent in Hello, see ``HandlerInfo`` in agent.proto). All are
    optional; the defaults claim nothing. They are checked here, at declaration, so a wrong one
    fails the import of the plugin rather than a task.
    """

    name: str
    fn: IoHandlerFn | CpuHandlerFn
    kind: HandlerKind = HandlerKind.IO
    slots: int = 0
    description: str = ""

    # -- cache (issue #6)
    cacheable: bool = False
    """The same payload gives an equivalent answer, so the controller may serve a cached one
    (exact match on the canonical request). Default False: caching is opt-in."""
    nondeterministic: bool = False
    """The same payload may give another answer (an LLM at temperature > 0): even a cacheable
    handler's results are then cached only for tasks that ask for it (CACHE_ON)."""
    similarity_field: str = ""
    """A JSON field of the payload whose text the similarity cache compares ("query"); needs
    ``cacheable``. Empty: exact matches only."""
    similarity_threshold: float | None = None
    """Similarity (0-1] above which a cached answer to a similar text is served; None takes
    :data:`DEFAULT_SIMILARITY_THRESHOLD` when a ``similarity_field`` is named, else 0."""
    cache_ttl_s: float = 0.0
    """How long a cached answer stays fresh; 0 = the controller's freshness rules."""

    # -- decomposition and prediction (issue #4)
    items_field: str = ""
    """A JSON list field of the payload ("urls", "items") whose elements are independent: the
    decomposer may split the task into parts that each carry a slice of it. Empty: never split
    by field."""
    splitter: Splitter | None = None
    """Optional: how to split a payload when slicing ``items_field`` is not enough (see
    :data:`Splitter`); needs a ``merger``. Used only by a controller that has the handler's
    package installed; the wire carries ``items_field`` alone."""
    merger: Merger | None = None
    """Joins the parts' outputs back into one (see :data:`Merger`); needs a ``splitter`` or an
    ``items_field`` (then the controller slices the list and this joins the outputs)."""
    default_duration_s: float = 0.0
    """Expected run time of one attempt (of one item when ``items_field`` is set), the
    predictor's cold start before it has observed any; 0 = no idea."""
    default_cpu_s: float = 0.0
    """Expected CPU seconds of one attempt (per item with ``items_field``); 0 = no idea."""
    default_memory_bytes: int = 0
    """Expected peak memory of one attempt; 0 = no idea."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise ValueError(f"handler name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.kind, HandlerKind):
            raise TypeError(f"handler {self.name!r}: kind must be a HandlerKind, got {self.kind!r}")
        if not isinstance(self.slots, int) or self.slots < 0:
            raise ValueError(
                f"handler {self.name!r}: slots must be an int >= 0, got {self.slots!r}"
            )
        if not callable(self.fn):
            raise TypeError(f"handler {self.name!r}: fn must be callable, got {self.fn!r}")
        is_async = _is_async_callable(self.fn)
        if self.kind is HandlerKind.IO and not is_async:
            raise TypeError(
                f"io handler {self.name!r} must be an async function "
                "`async def fn(ctx, payload) -> bytes`; for blocking work use kind='cpu'"
            )
        if self.kind is HandlerKind.CPU and is_async:
            raise TypeError(
                f"cpu handler {self.name!r} must be a plain function `def fn(payload) -> bytes`; "
                "async functions run as kind='io'"
            )
        self._check_cache_traits()
        self._check_split_traits()
        for trait in ("default_duration_s", "default_cpu_s", "cache_ttl_s"):
            _check_seconds(self.name, trait, getattr(self, trait))
        memory = self.default_memory_bytes
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise ValueError(
                f"handler {self.name!r}: default_memory_bytes must be an int >= 0, got {memory!r}"
            )

    def _check_cache_traits(self) -> None:
        name = self.name
        for flag in ("cacheable", "nondeterministic"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"handler {name!r}: {flag} must be True or False")
        field_name = self.similarity_field
        if field_name:
            _check_field_name(name, "similarity_field", field_name)
            if not self.cacheable:
                raise ValueError(
                    f"handler {name!r}: similarity_field={field_name!r} needs cacheable=True "
                    "(the similarity cache serves cached answers, which a handler that is not "
                    "cacheable has none of)"
                )
        threshold = self.similarity_threshold
        if threshold is None:
            resolved = DEFAULT_SIMILARITY_THRESHOLD if field_name else 0.0
            object.__setattr__(self, "similarity_threshold", resolved)
        else:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise TypeError(f"handler {name!r}: similarity_threshold must be a number")
            if not field_name:
                raise ValueError(
                    f"handler {name!r}: similarity_threshold={threshold!r} needs a "
                    "similarity_field naming the payload's text to compare"
                )
            if not 0.0 < threshold <= 1.0:
                raise ValueError(
                    f"handler {name!r}: similarity_threshold must be in (0, 1], got "
                    f"{threshold!r} (1 = identical text only; lower serves looser matches)"
                )
            object.__setattr__(self, "similarity_threshold", float(threshold))
        if self.cache_ttl_s and not self.cacheable:
            raise ValueError(
                f"handler {name!r}: cache_ttl_s={self.cache_ttl_s!r} needs cacheable=True"
            )

    def _check_split_traits(self) -> None:
        name = self.name
        if self.items_field:
            _check_field_name(name, "items_field", self.items_field)
        for trait in ("splitter", "merger"):
            value = getattr(self, trait)
            if value is not None and not callable(value):
                raise TypeError(f"handler {name!r}: {trait} must be callable, got {value!r}")
        if self.splitter is not None and self.merger is None:
            raise ValueError(
                f"handler {name!r}: a splitter needs a merger too (the parts' outputs must be "
                "joined back into one result)"
            )
        if self.merger is not None and self.splitter is None and not self.items_field:
            raise ValueError(
                f"handler {name!r}: a merger needs a splitter or an items_field (without one the "
                "task is never split, so nothing would be merged)"
            )

    def hello_traits(self) -> dict[str, Any]:
        """The declared traits as ``HandlerInfo`` field names and values, defaults left out (so
        a handler that declares nothing adds nothing to Hello)."""
        traits: dict[str, Any] = {}
        for trait in _HELLO_TRAITS:
            value = getattr(self, trait)
            if value:
                traits[trait] = value
        return traits


_HELLO_TRAITS = (
    "cacheable",
    "nondeterministic",
    "similarity_field",
    "similarity_threshold",
    "cache_ttl_s",
    "items_field",
    "default_duration_s",
    "default_cpu_s",
    "default_memory_bytes",
)
"""Handler fields that HandlerInfo carries under the same names."""


def _check_field_name(handler: str, trait: str, value: object) -> None:
    if not isinstance(value, str) or not _FIELD_NAME.fullmatch(value):
        raise ValueError(
            f"handler {handler!r}: {trait} must name a JSON field of the payload (letters, "
            f"digits, _ . -), got {value!r}"
        )


def _check_seconds(handler: str, trait: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"handler {handler!r}: {trait} must be a finite number >= 0, got {value!r}"
        )


_Fn = Callable[..., Any]


class HandlerTraits(TypedDict, total=False):
    """:class:`Handler` fields :func:`handler` passes on as given (described on the class)."""

    slots: int
    cacheable: bool
    nondeterministic: bool
    similarity_field: str
    similarity_threshold: float | None
    cache_ttl_s: float
    items_field: str
    splitter: Splitter | None
    merger: Merger | None
    default_duration_s: float
    default_cpu_s: float
    default_memory_bytes: int


class HandlerOptions(HandlerTraits, total=False):
    """The keyword arguments of :func:`handler`: ``kind`` ("io" by default), ``description``
    (the function's docstring's first line by default) and the traits, with :class:`Handler`'s
    defaults."""

    kind: HandlerKind | Literal["io", "cpu"]
    description: str


@overload
def handler(name: _Fn, /) -> Handler: ...


@overload
def handler(
    name: str | None = None, **options: Unpack[HandlerOptions]
) -> Callable[[_Fn], Handler]: ...


def handler(
    name: str | _Fn | None = None, **options: Unpack[HandlerOptions]
) -> Handler | Callable[[_Fn], Handler]:
    """Turn a function into a :class:`Handler`; usable bare (``@handler``) or with arguments.

    The name defaults to the function's name and the description to its docstring's first line.
    The traits (``cacheable`` ... ``default_memory_bytes``) are described on :class:`Handler`
    and checked at once: a contradiction (``similarity_field`` without ``cacheable``, a threshold
    outside (0, 1]) raises ValueError at decoration time.
    A cpu handler decorated in place (``@handler(kind="cpu") def f(payload)``) still works in the
    process pool: the worker imports the module attribute and takes the function out of it.
    Execution is at-least-once, so handlers with side effects must be idempotent.
    """
    unknown = options.keys() - HandlerOptions.__optional_keys__
    if unknown:  # as Python says it for a function with these keyword parameters
        raise TypeError(f"handler() got an unexpected keyword argument {min(unknown)!r}")
    kind = options.pop("kind", "io")
    description = options.pop("description", "")
    traits = cast(HandlerTraits, options)  # what is left once kind and description are out
    try:
        chosen = kind if isinstance(kind, HandlerKind) else HandlerKind(kind)
    except ValueError:
        raise ValueError(f"handler kind must be 'io' or 'cpu', got {kind!r}") from None

    def wrap(fn: _Fn, name: str | None = None) -> Handler:
        doc = inspect.getdoc(fn) or ""
        return Handler(
            name=name or fn.__name__,
            fn=fn,
            kind=chosen,
            description=description or (doc.splitlines()[0] if doc else ""),
            **traits,
        )

    if callable(name):
        return wrap(name)
    return lambda fn: wrap(fn, name)


# ------------------------------------------------------------------------- shared by runners


def coerce_output(name: str, value: object) -> HandlerResult:
    """Check a handler's return value; anything but bytes or a HandlerResult is a bug in the
    handler, which no retry fixes, so it is reported as a FatalError."""
    if isinstance(value, bytes):
        return HandlerResult(value)
    if isinstance(value, HandlerResult) and isinstance(value.output, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return HandlerResult(bytes(value))
    raise FatalError(
        f"handler {name!r} returned {type(value).__name__}; "
        "handlers must return bytes or HandlerResult (encode text with .encode())"
    )


def cpu_target(h: Handler) -> tuple[str, str]:
    """The (module, qualified name) a pool worker imports to find a cpu handler's function.

    Raises TypeError when the function is not reachable at module level, since the pool could
    not import it (lambdas, nested functions, methods of instances)."""
    fn = h.fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(
            f"cpu handler {h.name!r}: its function must be defined at module level so the "
            f"process pool can import it (got {fn!r})"
        )
    try:
        found = resolve_function(module, qualname)
    except (ImportError, AttributeError) as exc:
        raise TypeError(
            f"cpu handler {h.name!r}: the process pool could not find {module}:{qualname} ({exc})"
        ) from None
    if found is not fn:
        raise TypeError(
            f"cpu handler {h.name!r}: {module}:{qualname} is not its function; define the "
            "function at module level under its own name"
        )
    return module, qualname


def resolve_function(module: str, qualname: str) -> object:
    """The object at ``module:qualname``, or its function when it is a :class:`Handler` (a cpu
    handler decorated in place). Raises ImportError or AttributeError when it is not there."""
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj.fn if isinstance(obj, Handler) else obj
