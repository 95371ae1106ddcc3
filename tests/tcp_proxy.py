"""A TCP proxy in the test process: a network path the test can break.

``sever()`` drops every open connection (RST) but keeps accepting new ones, like a flaky link
or a NAT timeout; ``cut()`` also stops accepting, like a partition; ``pause()`` holds every
byte until ``resume()``, like a stalled link (no reset, only silence)."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target: str = "") -> None:
        self.target = target
        """host:port to forward to; may be set after start (before the first connection)."""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections_accepted = 0
        """Connections accepted so far (which of several proxies a client used)."""
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def sever(self) -> None:
        """Drop every open connection at once; new ones are still accepted."""
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def cut(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.sever()

    def pause(self) -> None:
        """Hold every byte, both ways, on open and new connections, until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward what was held, in order, and everything after it."""
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        try:
            host, _, port = self.target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except (OSError, ValueError):
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        pumps = [
            asyncio.create_task(_pump(reader, up_writer, self._flowing)),
            asyncio.create_task(_pump(up_reader, writer, self._flowing)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pumps)
        for w in (writer, up_writer):
            w.transport.abort()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
