"""Keeps the result cache in a SQLite file across controller restarts (``--cache-file``).

The cache itself stays pure: it records what changed, and this shell-side saver writes those
changes in one transaction every few seconds from a worker thread, never on the lookup path.
At start the file's fresh entries are loaded back (expiry is kept in wall-clock time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from deerflow_controller.cache import CacheFile, ResultCache

log = logging.getLogger(__name__)

SAVE_EVERY_S = 5.0


class CacheSaver:
    def __init__(self, cache: ResultCache, path: str, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.file = CacheFile(path)
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        records = self.file.load(self.clock(), time.time())
        restored = self.cache.restore(records, self.clock())
        log.info("result cache: %d entries restored from %s", restored, self.file.path)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            await self.save()

    async def save(self) -> None:
        batch = self.cache.drain_changes()
        if batch.puts or batch.deletes:
            try:
                await asyncio.to_thread(self.file.write, batch, self.clock(), time.time())
            except Exception:
                log.exception("result cache: could not write %s; will retry", self.file.path)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.save()
