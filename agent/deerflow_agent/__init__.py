"""deerflow-agent: the worker daemon, and the interface for writing its task handlers.

Plugin authors need only the handler names below (``handler``, ``TaskContext``, the errors) and
``HandlerEnvironment`` for tests. Importing this package does not import gRPC: the daemon's
stream (``Agent``, ``AgentConfig``) is loaded on first use, so cpu handlers' pool workers and
plugin test suites stay light.

Execution is at-least-once: a handler may run more than once for one task, so handlers with
side effects must be idempotent. Payloads are data, never code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Writing handlers
from ._handler import (
    CpuHandlerFn,
    ErrorClass,
    FatalError,
    Handler,
    HandlerError,
    HandlerKind,
    HandlerResult,
    IoHandlerFn,
    Merger,
    Splitter,
    TaskContext,
    handler,
)

# Installing handlers
from .registry import ENTRY_POINT_GROUP, HandlerRegistry

# Running attempts
from .runtime import Attempt, AttemptError, AttemptKey, ErrorKind, Outcome, Runtime

# Testing handlers
from .testing import HandlerEnvironment

if TYPE_CHECKING:
    from .session import Agent, AgentConfig

__all__ = [  # grouped by the import headers above; sorted as ruff wants
    "ENTRY_POINT_GROUP",
    "Agent",
    "AgentConfig",
    "Attempt",
    "AttemptError",
    "AttemptKey",
    "CpuHandlerFn",
    "ErrorClass",
    "ErrorKind",
    "FatalError",
    "Handler",
    "HandlerEnvironment",
    "HandlerError",
    "HandlerKind",
    "HandlerRegistry",
    "HandlerResult",
    "IoHandlerFn",
    "Merger",
    "Outcome",
    "Runtime",
    "Splitter",
    "TaskContext",
    "handler",
]

_LAZY = {"Agent": "session", "AgentConfig": "session"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
