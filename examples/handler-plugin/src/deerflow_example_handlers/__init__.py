"""Example handlers for deerflow-parallel agents (see docs/HANDLERS.md in the repository)."""

from .handlers import digest, tally, wordcount

__all__ = ["digest", "tally", "wordcount"]
