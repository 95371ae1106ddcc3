"""Loading plugins: what an entry-point group of the installed packages names, or what a
``module:attr`` spec given on a command line names.

The agent's handler registry and the controller's splitters load the same ``deerflow.handlers``
group through here, so the controller needs nothing from the agent's package to find the
splitters and mergers a handler package declares. A package declares a plugin in its
pyproject::

    [project.entry-points."deerflow.handlers"]
    search = "mypkg.handlers:search"

Nothing here checks what the object is: each caller does, for its own kind of plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass

__all__ = ["HANDLERS_GROUP", "Plugin", "load_entry_points", "load_spec"]

log = logging.getLogger(__name__)

HANDLERS_GROUP = "deerflow.handlers"
"""Entry points of handlers: a ``Handler`` or a plain ``async def fn(ctx, payload)`` each."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One loaded entry point."""

    name: str
    """The entry point's name."""
    source: str
    """Where it came from, for messages: "entry point 'search' (mypkg.handlers:search) of
    mypkg"."""
    obj: object
    """What it names, imported."""


def load_spec(spec: str, *, what: str) -> object:
    """Import ``module:attr`` (``attr`` may be dotted) and return what it names.

    ``what`` names the kind of plugin in messages ("handler"). Blocks for the import. Raises
    ValueError with one sentence a person can act on for a malformed spec, a missing module or
    attribute, or an import that fails."""
    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr or ":" in attr:
        raise ValueError(
            f"{what} spec {spec!r} is not of the form module:attr "
            "(for example mypkg.handlers:search)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ValueError(
                f"{what} spec {spec!r}: no module named {exc.name!r}; install the package "
                "that provides it in this environment or add its folder to PYTHONPATH"
            ) from None
        raise ValueError(
            f"{what} spec {spec!r}: importing {module_name!r} failed because it needs "
            f"{exc.name!r}, which is not installed"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"{what} spec {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"{what} spec {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


def load_entry_points(group: str, *, what: str) -> list[Plugin]:
    """Every entry point of ``group`` in the installed packages, imported, sorted by name.

    One that fails to import is logged as a warning naming it (``what`` says what it is) and
    left out, so one broken package cannot stop a daemon. Blocks for the imports; never
    raises for a plugin's sake."""
    plugins = []
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
        source = f"entry point {ep.name!r} ({ep.value}) of {dist}"
        try:
            obj = ep.load()
        except Exception as exc:
            log.warning("skipping %s %s: %s: %s", what, source, type(exc).__name__, exc)
            continue
        plugins.append(Plugin(ep.name, source, obj))
    return plugins
