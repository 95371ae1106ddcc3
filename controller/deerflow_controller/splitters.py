"""Handlers' own splitters and mergers, when their packages are installed in the controller's
environment (the same ``deerflow.handlers`` entry points agents load). Nothing executable crosses
the wire: a handler installed only on agents is split by its declared ``items_field`` alone."""

from __future__ import annotations

import logging
from functools import cache
from typing import cast

from .decomposer import Merger, Splitter

log = logging.getLogger(__name__)


@cache
def _local_handlers() -> dict[str, tuple[Splitter | None, Merger | None]]:
    try:
        from deerflow_agent.registry import HandlerRegistry

        registry = HandlerRegistry.discover()
    except Exception:  # a broken plugin must not take the controller down
        log.exception("could not load handler entry points; custom splitters are off")
        return {}
    # The agent declares plain callables of the same shape as the decomposer's protocols.
    return {
        name: (cast("Splitter | None", h.splitter), h.merger)
        for name, h in registry.items()
        if h.splitter is not None or h.merger is not None
    }


def local_split_functions(handler: str) -> tuple[Splitter | None, Merger | None]:
    """The splitter and merger ``handler`` declares, if installed here; else (None, None)."""
    return _local_handlers().get(handler, (None, None))
