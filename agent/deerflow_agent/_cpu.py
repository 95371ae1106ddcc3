"""The cpu-handler trampoline: what a process-pool worker runs. Only the function's module and
qualified name and the payload's bytes cross the process boundary; the worker imports the
function once and measures each call's CPU time and peak memory."""

from __future__ import annotations

import resource
import sys
import time

from ._handler import CpuHandlerFn, HandlerResult, resolve_function

__all__ = ["call_cpu_handler"]

_resolved: dict[tuple[str, str], CpuHandlerFn] = {}
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
"""Bytes per unit of ru_maxrss: KiB on Linux, bytes on macOS."""


def call_cpu_handler(
    module: str, qualname: str, payload: bytes
) -> tuple[bytes | HandlerResult, float, int]:
    """Entry point of a pool worker: import the cpu handler's function by name (once per worker),
    call it, and return ``(value, cpu_s, rss_bytes)``. Only names and the payload's bytes cross
    the process boundary.

    ``cpu_s`` is the worker's process time (user + system) spent in the call; ``rss_bytes`` the
    worker's peak resident memory so far (``getrusage``'s ru_maxrss: a high-water mark over the
    worker's life, so an upper bound for this attempt). Both cost about a microsecond."""
    key = (module, qualname)
    fn = _resolved.get(key)
    if fn is None:
        found = resolve_function(module, qualname)
        if not callable(found):
            raise TypeError(f"{module}:{qualname} is not callable")
        fn = _resolved[key] = found
    before = time.process_time()
    value = fn(payload)
    cpu_s = time.process_time() - before
    return value, cpu_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT
