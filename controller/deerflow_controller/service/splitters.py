"""Handlers' own splitters and mergers, when their packages are installed in the controller's
environment (the same ``deerflow.handlers`` entry points agents load, through
:mod:`deerflow_common.plugins`). Nothing executable crosses the wire: a handler installed only
on agents is split by its declared ``items_field`` alone.

The controller reads a handler's ``name``, ``splitter`` and ``merger`` attributes and nothing
else, so it needs nothing from the agent's package.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import cast

from deerflow_common.plugins import HANDLERS_GROUP, load_entry_points
from deerflow_controller.decomposer import Merger, Splitter

log = logging.getLogger(__name__)


@cache
def _local_handlers() -> dict[str, tuple[Splitter | None, Merger | None]]:
    try:
        return _split_functions()
    except Exception:  # a broken plugin must not take the controller down
        log.exception("could not load handler entry points; custom splitters are off")
        return {}


def _split_functions() -> dict[str, tuple[Splitter | None, Merger | None]]:
    """The splitters and mergers of the installed handlers, by handler name (as agents name
    them: the handler's own name, a plain function's name). Raises ValueError when two
    different handlers share a name, as the agent refuses them."""
    handlers: dict[str, tuple[object, str]] = {}
    for plugin in load_entry_points(HANDLERS_GROUP, what="handler"):
        name = _handler_name(plugin.obj, plugin.name)
        seen = handlers.get(name)
        if seen is not None and seen[0] is not plugin.obj and seen[0] != plugin.obj:
            raise ValueError(
                f"two different handlers are named {name!r}: one from {seen[1]}, one from "
                f"{plugin.source}"
            )
        handlers[name] = (plugin.obj, plugin.source)
    split: dict[str, tuple[Splitter | None, Merger | None]] = {}
    for name, (obj, _) in handlers.items():
        splitter, merger = getattr(obj, "splitter", None), getattr(obj, "merger", None)
        if splitter is not None or merger is not None:
            # Handlers declare plain callables of the same shape as the decomposer's protocols.
            split[name] = (cast("Splitter | None", splitter), cast("Merger | None", merger))
    return split


def _handler_name(obj: object, entry_point: str) -> str:
    """The name agents install ``obj`` under: a Handler's own, a plain function's name."""
    for attr in ("name", "__name__"):
        name = getattr(obj, attr, None)
        if isinstance(name, str) and name:
            return name
    return entry_point


def local_split_functions(handler: str) -> tuple[Splitter | None, Merger | None]:
    """The splitter and merger ``handler`` declares, if installed here; else (None, None)."""
    return _local_handlers().get(handler, (None, None))
