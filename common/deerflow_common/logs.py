"""One logging setup for every daemon: a single line per record, to stderr."""

from __future__ import annotations

import logging
import os


def setup_logging(name: str, level: str | None = None) -> None:
    """Configure the root logger. ``level`` defaults to $DEERFLOW_LOG_LEVEL, then INFO."""
    chosen = (level or os.environ.get("DEERFLOW_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=chosen,
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
