"""High availability on etcd: leader election, the journal, restore, agent leases.

Used when the controller runs with ``--etcd``; embedded mode imports only :class:`HaConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deerflow_controller.ha.config import HaConfig

if TYPE_CHECKING:
    from deerflow_controller.ha.journal import (
        Expiry,
        Journal,
        JournalClosed,
        JournaledJob,
        JournalRecordTooLarge,
        load_journal,
    )
    from deerflow_controller.ha.leader_gate import (
        EPOCH_METADATA,
        LEADER_METADATA,
        LeaderGate,
        Term,
    )
    from deerflow_controller.ha.leadership import HaRunner

# The journal, the gate and the runner import the etcd client (aetcd): loaded on first use, so
# that embedded mode, which needs only HaConfig (the command line's defaults), starts without.
_LAZY = {
    **dict.fromkeys(
        (
            "Expiry",
            "Journal",
            "JournalClosed",
            "JournaledJob",
            "JournalRecordTooLarge",
            "load_journal",
        ),
        "journal",
    ),
    **dict.fromkeys(("EPOCH_METADATA", "LEADER_METADATA", "LeaderGate", "Term"), "leader_gate"),
    "HaRunner": "leadership",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EPOCH_METADATA",
    "LEADER_METADATA",
    "Expiry",
    "HaConfig",
    "HaRunner",
    "Journal",
    "JournalClosed",
    "JournalRecordTooLarge",
    "JournaledJob",
    "LeaderGate",
    "Term",
    "load_journal",
]
