"""High availability on etcd: leader election, the journal, restore, agent leases.

Used when the controller runs with ``--etcd``; embedded mode never imports it."""

from deerflow_controller.ha.config import HaConfig
from deerflow_controller.ha.journal import (
    Expiry,
    Journal,
    JournalClosed,
    JournaledJob,
    JournalRecordTooLarge,
    load_journal,
)
from deerflow_controller.ha.leader_gate import EPOCH_METADATA, LEADER_METADATA, LeaderGate, Term
from deerflow_controller.ha.leadership import HaRunner

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
