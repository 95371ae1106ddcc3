"""gRPC does not survive ``os.fork()``: a child forked after its parent used gRPC hangs or
crashes on its first call (measured: a drop-in call in such a child hung for good; a new Client
there died of SIGSEGV, or of SIGABRT on a failed check in gRPC's poller, even when the parent
had closed its own). The SDK therefore refuses, with one sentence, to talk to a controller from
a child forked after its parent opened a connection: the parent's clients there (whose threads
were not copied) and new ones alike. A child of a parent that never connected is unaffected.
"""

from __future__ import annotations

import os

FORKED_AFTER_GRPC = (
    "deerflow-parallel cannot talk to the controller from a process forked after its parent "
    "opened a connection (gRPC does not survive os.fork()); open connections only in the child "
    "processes: start them with multiprocessing's 'spawn' or 'forkserver' method, or fork "
    "before the first call"
)

_used = False
"""This process opened a gRPC connection to a controller (never reset: closing one does not
undo what gRPC set up)."""
_inherited = False
"""This process was forked after its parent (or an ancestor) had ``_used``."""


def opening() -> None:
    """Call before opening a connection: raises RuntimeError (``FORKED_AFTER_GRPC``) in a child
    forked after its parent used gRPC; else notes that this process uses it."""
    global _used
    if _inherited:
        raise RuntimeError(FORKED_AFTER_GRPC)
    _used = True


def inherited() -> bool:
    """Is this a child forked after its parent used gRPC?"""
    return _inherited


def _after_fork_in_child() -> None:
    global _inherited
    _inherited = _inherited or _used


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
