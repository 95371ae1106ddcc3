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

# Shared with the controller: attempt keys and error classes
from deerflow_common.errors import AttemptKey, ErrorClass, ErrorKind

# Running attempts
from ._attempt import Attempt, AttemptError, Outcome

# Writing handlers
from ._context import TaskContext
from ._errors import FatalError, HandlerError
from ._handler import (
    CpuHandlerFn,
    Handler,
    HandlerKind,
    HandlerResult,
    IoHandlerFn,
    Merger,
    Splitter,
    handler,
)
from ._inputs import Inputs

# Running attempts (with the names above)
from ._runtime import Runtime

# Installing handlers
from .registry import ENTRY_POINT_GROUP, HandlerRegistry

# Testing handlers
from .testing import HandlerEnvironment

if TYPE_CHECKING:
    from ._config import AgentConfig
    from ._load import LoadSampler
    from ._session import Agent

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
    "Inputs",
    "IoHandlerFn",
    "LoadSampler",
    "Merger",
    "Outcome",
    "Runtime",
    "Splitter",
    "TaskContext",
    "handler",
]

_LAZY = {"Agent": "_session", "AgentConfig": "_config", "LoadSampler": "_load"}
"""Loaded on first use: the daemon's stream (gRPC) and its load sampler (psutil). A process that
runs many agents (``deerflow bench scale``'s light agents) shares one ``LoadSampler``."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
