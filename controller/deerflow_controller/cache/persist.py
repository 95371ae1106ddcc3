"""Optional persistence: a SQLite file so a restarted controller keeps its cache.

Off by default. The controller's shell owns the file: it calls ``ResultCache.drain_changes``
every few seconds (never per lookup) and writes the batch in one transaction, preferably from a
worker thread (``asyncio.to_thread``); at start-up it loads the file and calls
``ResultCache.restore``. Times are stored as wall-clock seconds, converted from and to the
cache's clock (which may be monotonic) with the two clocks' readings at the call."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from deerflow_controller.cache.result_cache import ChangeBatch, PersistedEntry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    digest BLOB PRIMARY KEY,
    handler TEXT NOT NULL,
    scope BLOB NOT NULL,
    text TEXT NOT NULL,
    output BLOB NOT NULL,
    cost_s REAL NOT NULL,
    created_wall REAL NOT NULL,
    expires_wall REAL NOT NULL,
    origin INTEGER NOT NULL,
    freq REAL NOT NULL,
    similar INTEGER NOT NULL
)
"""


class CacheFile:
    """One SQLite file of cache entries. Blocking: call from a thread, not the event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def write(self, batch: ChangeBatch, now: float, wall_now: float) -> None:
        """Apply one batch of changes in a single transaction."""
        shift = wall_now - now
        with self._db:
            if batch.deletes:
                self._db.executemany(
                    "DELETE FROM entries WHERE digest = ?", [(d,) for d in batch.deletes]
                )
            if batch.puts:
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            p.digest,
                            p.handler,
                            p.scope,
                            p.text,
                            p.output,
                            p.cost_s,
                            p.created + shift,
                            p.expires_at + shift,
                            p.origin,
                            p.freq,
                            int(p.similar),
                        )
                        for p in batch.puts
                    ],
                )

    def load(self, now: float, wall_now: float) -> list[PersistedEntry]:
        """Every entry still fresh at ``wall_now``, with times on the cache's clock."""
        shift = now - wall_now
        rows = self._db.execute(
            "SELECT digest, handler, scope, text, output, cost_s, created_wall, expires_wall,"
            " origin, freq, similar FROM entries WHERE expires_wall > ?",
            (wall_now,),
        ).fetchall()
        return [
            PersistedEntry(
                bytes(r[0]),
                r[1],
                bytes(r[2]),
                r[3],
                bytes(r[4]),
                float(r[5]),
                float(r[6]) + shift,
                float(r[7]) + shift,
                int(r[8]),
                float(r[9]),
                bool(r[10]),
            )
            for r in rows
        ]

    def close(self) -> None:
        self._db.close()
