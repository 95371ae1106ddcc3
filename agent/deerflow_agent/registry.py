"""Finding handlers: the ``deerflow.handlers`` entry-point group and ``module:attr`` specs,
loaded by :mod:`deerflow_common.plugins` (the controller finds handlers' splitters through it too).

A package offers handlers by declaring entry points, for example in its pyproject::

    [project.entry-points."deerflow.handlers"]
    search = "mypkg.handlers:search"

The attribute may be a :class:`Handler` or a plain ``async def fn(ctx, payload)`` (then an io
handler named after the function). A handler's own name is the name assignments use.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator, Mapping

from deerflow_common import plugins

from ._handler import Handler, HandlerKind, cpu_target

__all__ = ["ENTRY_POINT_GROUP", "HandlerRegistry"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = plugins.HANDLERS_GROUP


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
        source = f"--handler {spec}"
        handler = as_handler(plugins.load_spec(spec, what="handler"), source)
        self.add(handler, source)
        return handler

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Install every handler declared in ``group``; one that fails to import or is not a
        handler is logged as a warning and skipped, so one broken plugin cannot stop the agent."""
        for plugin in plugins.load_entry_points(group, what="handler"):
            try:
                handler = as_handler(plugin.obj, plugin.source)
            except ValueError as exc:
                log.warning("skipping handler %s: %s: %s", plugin.source, type(exc).__name__, exc)
                continue
            if handler.name != plugin.name:
                log.warning(
                    "%s is installed under the handler's own name %r", plugin.source, handler.name
                )
            self.add(handler, plugin.source)


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
