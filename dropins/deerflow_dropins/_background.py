"""One event loop in a daemon thread, holding the SDK clients that outlive a caller's call (the
sub-agent executor's background runs): DeerFlow calls ``execute_async`` from sync code and from
loops that come and go, so the runs cannot live on the caller's loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from deerflow_controller.client import AsyncClient

T = TypeVar("T")

CONTROLLER_ENV = "DEERFLOW_CONTROLLER"
"""The controller address(es) when none is given: the variable the CLI and agents read."""


def controller_address(address: str | None = None) -> str:
    """``address``, else ``$DEERFLOW_CONTROLLER``, else the SDK's default."""
    from deerflow_controller.client import DEFAULT_ADDRESS

    return address or os.environ.get(CONTROLLER_ENV) or DEFAULT_ADDRESS


class BackgroundLoop:
    """An event loop running in a daemon thread, with one AsyncClient per address on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._clients: dict[str, AsyncClient] = {}
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="deerflow-dropins", daemon=True
        )
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop; never blocks. Raises RuntimeError when called from the
        loop's own thread with the intent to wait (see :meth:`call`)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def client(self, address: str) -> AsyncClient:
        """The loop's client for ``address`` (made on first use). Call from the loop only."""
        client = self._clients.get(address)
        if client is None:
            from deerflow_controller.client import AsyncClient

            client = self._clients[address] = AsyncClient(address)
        return client


_shared: BackgroundLoop | None = None
_shared_lock = threading.Lock()


def background() -> BackgroundLoop:
    """The process's background loop, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = BackgroundLoop()
        return _shared
