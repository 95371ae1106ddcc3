"""High availability on etcd: leader election, the journal, restore, agent leases.

Used when the controller runs with ``--etcd``; embedded mode never imports it."""

from .config import HaConfig
from .gate import EPOCH_METADATA, LEADER_METADATA, LeaderGate, Term
from .journal import (
    Expiry,
    Journal,
    JournalClosed,
    JournaledJob,
    JournalRecordTooLarge,
    load_journal,
)
from .leadership import HaRunner

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
