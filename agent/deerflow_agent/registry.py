"""Finding handlers: the ``deerflow.handlers`` entry-point group and ``module:attr`` specs.

A package offers handlers by declaring entry points, for example in its pyproject::

    [project.entry-points."deerflow.handlers"]
    search = "mypkg.handlers:search"

The attribute may be a :class:`Handler` or a plain ``async def fn(ctx, payload)`` (then an io
handler named after the function). A handler's own name is the name assignments use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Iterable, Iterator, Mapping

from ._handler import Handler, HandlerKind, cpu_target

__all__ = ["ENTRY_POINT_GROUP", "HandlerRegistry"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "deerflow.handlers"


class HandlerRegistry(Mapping[str, Handler]):
    """Handlers by name, each remembered with where it came from (for error messages).

    A read-only mapping once built; :meth:`add`, :meth:`load_spec` and
    :meth:`load_entry_points` raise ValueError for two different handlers with one name.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._sources: dict[str, str] = {}

    @classmethod
    def discover(cls, specs: Iterable[str] = (), *, entry_points: bool = True) -> HandlerRegistry:
        """Entry points of the installed packages (when ``entry_points``), then ``specs``
        (``module:attr``, as given to ``--handler``). Raises ValueError for a bad spec or a
        duplicate name; an entry point that fails to load is logged and skipped."""
        registry = cls()
        if entry_points:
            registry.load_entry_points()
        for spec in specs:
            registry.load_spec(spec)
        return registry

    # ----------------------------------------------------------------- Mapping

    def __getitem__(self, name: str) -> Handler:
        return self._handlers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def source(self, name: str) -> str:
        """Where the handler called ``name`` came from, for messages."""
        return self._sources[name]

    # ----------------------------------------------------------------- loading

    def add(self, handler: Handler, source: str) -> None:
        """Install ``handler``. The same object from two sources is installed once; a different
        handler under a taken name is an error."""
        if handler.kind is HandlerKind.CPU:
            try:
                cpu_target(handler)
            except TypeError as exc:
                raise ValueError(f"{source}: {exc}") from None
        existing = self._handlers.get(handler.name)
        if existing is not None:
            if existing is handler or existing == handler:
                return
            raise ValueError(
                f"two different handlers are named {handler.name!r}: one from "
                f"{self._sources[handler.name]}, one from {source}; rename one of them "
                "(handler(name=...)) or remove the package or --handler that provides the other"
            )
        self._handlers[handler.name] = handler
        self._sources[handler.name] = source

    def load_spec(self, spec: str) -> Handler:
        """Import ``module:attr`` (attr may be dotted) and install what it names."""
        module_name, sep, attr = spec.partition(":")
        module_name, attr = module_name.strip(), attr.strip()
        if not sep or not module_name or not attr or ":" in attr:
            raise ValueError(
                f"handler spec {spec!r} is not of the form module:attr "
                "(for example mypkg.handlers:search)"
            )
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise ValueError(
                    f"handler spec {spec!r}: no module named {exc.name!r}; install the package "
                    "that provides it in this environment or add its folder to PYTHONPATH"
                ) from None
            raise ValueError(
                f"handler spec {spec!r}: importing {module_name!r} failed because it needs "
                f"{exc.name!r}, which is not installed"
            ) from None
        except Exception as exc:
            raise ValueError(
                f"handler spec {spec!r}: importing {module_name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        obj: object = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ValueError(
                    f"handler spec {spec!r}: module {module_name!r} has no attribute {attr!r}"
                ) from None
        handler = as_handler(obj, f"--handler {spec}")
        self.add(handler, f"--handler {spec}")
        return handler

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Install every handler declared in ``group``; one that fails to import or is not a
        handler is logged as a warning and skipped, so one broken plugin cannot stop the agent."""
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
            source = f"entry point {ep.name!r} ({ep.value}) of {dist}"
            try:
                handler = as_handler(ep.load(), source)
            except Exception as exc:
                log.warning("skipping handler %s: %s: %s", source, type(exc).__name__, exc)
                continue
            if handler.name != ep.name:
                log.warning("%s is installed under the handler's own name %r", source, handler.name)
            self.add(handler, source)


def as_handler(obj: object, source: str) -> Handler:
    """A Handler as is, or a plain async function as an io handler named after it."""
    if isinstance(obj, Handler):
        return obj
    if inspect.iscoroutinefunction(obj):
        return Handler(getattr(obj, "__name__", str(obj)), obj, HandlerKind.IO)
    if callable(obj):
        name = getattr(obj, "__qualname__", type(obj).__name__)
        raise ValueError(
            f"{source} names {name!r}, which is not async: io handlers are `async def fn(ctx, "
            "payload)`; declare a blocking function with @handler(kind='cpu')"
        )
    raise ValueError(
        f"{source} names a {type(obj).__name__}, not a handler; point it at a Handler (made "
        "with @deerflow_agent.handler) or an async function"
    )
