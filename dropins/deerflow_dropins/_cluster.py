"""How a drop-in finds the cluster and runs a task on it: shared by every drop-in module.

**Where the controller is.** An explicit address (``ClusterChatModel(controller=...)``,
``connect("10.0.0.5:7400")``) wins; otherwise ``$DEERFLOW_CONTROLLER``, the variable the
``deerflow`` CLI and ``deerflow-agent`` read (one address, or several comma-separated for an HA
pair: the SDK finds the leader). Unlike the CLI, a drop-in does not fall back to
127.0.0.1:7400: a DeerFlow process that was never pointed at a cluster fails its first call
with :class:`ControllerNotConfiguredError` naming the variable, instead of a connection refused
minutes later.

**One connection per process and address.** :func:`connect` returns a shared
:class:`ClusterConnection`: one :class:`~deerflow_controller.client.AsyncClient` (one gRPC
channel) on a private event loop in a daemon thread. Blocking callers (``tool.invoke``,
``model.invoke``, DeerFlow 1.x's sync graph, thread pools) and async callers on any event loop
(``ainvoke``, LangGraph's loop, a sub-agent's loop, ``asyncio.run`` per call) all go through
it, so nothing is bound to a caller's loop and a loop that closes leaves the channel usable.
Each call runs in a copy of the caller's ``contextvars`` context, so the caller's current
OpenTelemetry span is the parent of the SDK's ``deerflow.submit`` span (see ``_trace``).

**One task, one job.** :meth:`ClusterConnection.run_task` submits one task as its own job and
waits for its one terminal result; cancelling the waiting caller (an ``ainvoke`` whose task is
cancelled) cancels the job on the cluster too.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import os
import threading
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry.trace import TracerProvider

from deerflow_common.runner import new_loop
from deerflow_controller.client import (
    FORKED_AFTER_GRPC,
    AsyncClient,
    DeerflowError,
    Task,
    TaskResult,
    TlsFiles,
)

__all__ = [
    "CONTROLLER_ENV",
    "ClusterConnection",
    "ClusterSettings",
    "ControllerNotConfiguredError",
    "close_all",
    "connect",
    "controller_address",
]

T = TypeVar("T")

CONTROLLER_ENV = "DEERFLOW_CONTROLLER"
"""The controller's address (host:port, or several comma-separated), as the CLI and the agent
read it."""
TENANT_ENV = "DEERFLOW_TENANT"
TOKEN_ENV = "DEERFLOW_TOKEN"
"""The bearer token of a controller that authenticates clients, as the CLI reads it."""
ACCOUNT_ENVS = {
    "llm": "DEERFLOW_LLM_ACCOUNT",
    "search": "DEERFLOW_SEARCH_ACCOUNT",
    "crawl": "DEERFLOW_CRAWL_ACCOUNT",
}
DEFAULT_ACCOUNT = "default"
MAX_NAME_CHARS = 128


class ControllerNotConfiguredError(DeerflowError, ValueError):
    """No controller address was given and ``$DEERFLOW_CONTROLLER`` is unset."""


def controller_address(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The controller address a drop-in uses: ``explicit``, else ``$DEERFLOW_CONTROLLER``.

    Raises :class:`ControllerNotConfiguredError` (one sentence naming the variable) when
    neither is set."""
    environ = os.environ if env is None else env
    address = (explicit or environ.get(CONTROLLER_ENV, "")).strip()
    if not address:
        raise ControllerNotConfiguredError(
            f"no deerflow-parallel controller configured: set {CONTROLLER_ENV}=host:port (or "
            "several comma-separated) in DeerFlow's environment, or pass controller=... to the "
            "drop-in"
        )
    return address


def _name(value: str, what: str, env_name: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME_CHARS or any(c in value for c in "/ \t\n"):
        raise ValueError(
            f"{env_name} ({what}) must be 1-{MAX_NAME_CHARS} characters without '/' or spaces, "
            f"got {value[:40]!r}"
        )
    return value


@dataclass(frozen=True)
class ClusterSettings:
    """What the drop-ins put on every task besides the call itself; from the environment by
    :meth:`from_env`, or built directly."""

    tenant: str = ""
    """Whose work this is (``Task.tenant``): within a priority, tenants take turns in the
    controller's queues and on rate keys. ``$DEERFLOW_TENANT``; empty = the default tenant."""
    llm_account: str = DEFAULT_ACCOUNT
    """Which provider account LLM calls draw on: the middle of the rate key
    ``llm/<account>/<model>``. ``$DEERFLOW_LLM_ACCOUNT``. Name the account (for example the key's
    id), never the secret: rate keys show on the dashboard and in metrics."""
    search_account: str = DEFAULT_ACCOUNT
    """Rate key ``search/<account>`` of every ``web_search`` call. ``$DEERFLOW_SEARCH_ACCOUNT``."""
    crawl_account: str = DEFAULT_ACCOUNT
    """Rate key ``crawl/<account>`` of every ``crawl_tool`` call. ``$DEERFLOW_CRAWL_ACCOUNT``."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClusterSettings:
        """Read ``$DEERFLOW_TENANT`` and ``$DEERFLOW_{LLM,SEARCH,CRAWL}_ACCOUNT``; raises
        ValueError naming the variable when one is malformed."""
        environ = os.environ if env is None else env
        tenant = environ.get(TENANT_ENV, "").strip()
        if tenant:
            _name(tenant, "tenant", TENANT_ENV)
        accounts = {
            f"{kind}_account": _name(environ.get(var) or DEFAULT_ACCOUNT, "account", var)
            for kind, var in ACCOUNT_ENVS.items()
        }
        return cls(tenant=tenant, **accounts)

    def llm_key(self, model: str) -> str:
        return f"llm/{self.llm_account}/{model}"

    @property
    def search_key(self) -> str:
        return f"search/{self.search_account}"

    @property
    def crawl_key(self) -> str:
        return f"crawl/{self.crawl_account}"


class ClusterConnection:
    """An :class:`AsyncClient` on a private event loop in a daemon thread, callable from any
    thread (:meth:`run`, blocking) and any event loop (:meth:`arun`).

    Blocks: :meth:`run` blocks its thread until the coroutine ends; :meth:`arun` suspends only
    its caller. Never call :meth:`run` from this connection's own loop (it would wait for itself:
    RuntimeError). :meth:`close` closes the channel and stops the thread; calls after it raise
    RuntimeError."""

    def __init__(
        self,
        address: str,
        *,
        settings: ClusterSettings | None = None,
        tracer_provider: TracerProvider | None = None,
        timeout_s: float | None = 30.0,
        tls: TlsFiles | None = None,
    ) -> None:
        self.address = address
        self.settings = settings if settings is not None else ClusterSettings.from_env()
        self.tracer_provider = tracer_provider
        # TLS: ``tls``, else $DEERFLOW_TLS_CA/_CERT/_KEY as the CLI reads them; neither: plaintext.
        self.tls = tls if tls is not None else TlsFiles.from_env()
        self._pid = os.getpid()
        """The process this connection (its loop's thread) lives in: a forked child has no
        thread behind it, and gRPC does not work there anyway (``FORKED_AFTER_GRPC``)."""
        self._loop = new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="deerflow-dropins", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self.client: AsyncClient = self._submit(
                _make_client(address, timeout_s, tracer_provider, self.tls), contextvars.Context()
            ).result()
        except BaseException:  # a bad TLS file (ValueError naming it): leave no thread behind
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            raise

    # ----------------------------------------------------------------- calling in

    def _submit(
        self, coro: Coroutine[Any, Any, T], context: contextvars.Context
    ) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the private loop in ``context``; the future's cancel cancels it."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        loop = self._loop
        if os.getpid() != self._pid:
            coro.close()
            raise RuntimeError(FORKED_AFTER_GRPC)
        if self._closed or loop.is_closed():
            coro.close()
            raise RuntimeError("the deerflow-parallel connection is closed")

        def start() -> None:
            # The future stays PENDING while the coroutine runs: a concurrent future can be
            # cancelled only then, and its cancel is how a cancelled caller stops the task.
            if future.cancelled():
                coro.close()
                return
            task = loop.create_task(coro, context=context)

            def finished(t: asyncio.Task[T]) -> None:
                if future.done():
                    return
                if t.cancelled():
                    future.cancel()
                elif (exc := t.exception()) is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(t.result())

            task.add_done_callback(finished)
            future.add_done_callback(
                lambda f: f.cancelled() and loop.call_soon_threadsafe(task.cancel)
            )

        loop.call_soon_threadsafe(start)
        return future

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the private loop, in a copy of the caller's context, and return at
        once (for runs that outlive the caller's call, such as background sub-agent runs)."""
        return self._submit(coro, contextvars.copy_context())

    def in_own_loop(self) -> bool:
        """True when called from this connection's own loop (where :meth:`run` must not be)."""
        return _running_loop() is self._loop

    def run(self, make: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
        """Run ``make(client)`` on the private loop, in a copy of the caller's context, and
        block until it ends; its exception is raised here."""
        if _running_loop() is self._loop:
            raise RuntimeError("ClusterConnection.run was called from its own event loop")
        return self._submit(make(self.client), contextvars.copy_context()).result()

    async def arun(self, make: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
        """Run ``make(client)`` on the private loop, in a copy of the caller's context, without
        blocking the caller's loop. Cancelling the caller cancels the coroutine."""
        future = self._submit(make(self.client), contextvars.copy_context())
        return await asyncio.wrap_future(future)

    # ----------------------------------------------------------------- one task

    def run_task(self, task: Task, *, name: str = "", timeout_s: float | None = None) -> TaskResult:
        """Submit ``task`` as a job of its own and wait for its terminal result (blocking).
        Returns the result whatever its state; raises only what the SDK raises (the controller
        unreachable, the job refused)."""
        return self.run(lambda client: _one_task(client, task, name, timeout_s))

    async def arun_task(
        self, task: Task, *, name: str = "", timeout_s: float | None = None
    ) -> TaskResult:
        """:meth:`run_task` for async callers; cancelling the caller cancels the job."""
        return await self.arun(lambda client: _one_task(client, task, name, timeout_s))

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        """Close the channel and stop the loop's thread (idempotent)."""
        if self._closed:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self._submit(self.client.close(), contextvars.Context()).result(timeout=5)
            # Result streams a caller stopped reading finish closing before the loop stops
            # (else "Task was destroyed but it is pending!" at exit).
            self._submit(self._loop.shutdown_asyncgens(), contextvars.Context()).result(timeout=5)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


async def _make_client(
    address: str,
    timeout_s: float | None,
    tracer_provider: TracerProvider | None,
    tls: TlsFiles | None,
) -> AsyncClient:
    # A grpc.aio channel belongs to the loop it is created on: create it on the private loop.
    return AsyncClient(
        address,
        timeout_s=timeout_s,
        tracer_provider=tracer_provider,
        token=os.environ.get(TOKEN_ENV) or None,
        tls=tls,
    )


async def _one_task(
    client: AsyncClient, task: Task, name: str, timeout_s: float | None
) -> TaskResult:
    # The job's id is ours before the submit, so that the cancel below can name it even when
    # the submit is what was given up (through SubmitJob; on the stream its cancel follows it).
    job_id = uuid.uuid4().hex
    try:
        # The submit and its result travel on the client's Session stream (one message each
        # way, no call of their own); the wait keeps its deadline there. Given up during the
        # submit, the job's cancel follows it on the stream (it cannot overtake the submit).
        handle = await client.submit(
            [task], job_id=job_id, name=name, watch="results", cancel_if_abandoned=True
        )
        return await handle.result(task.id, timeout_s=timeout_s)
    except asyncio.CancelledError:
        # The caller gave up: do not leave the task running (or queued) on the cluster.
        await asyncio.shield(_cancel_quietly(client, job_id))
        raise


async def _cancel_quietly(client: AsyncClient, job_id: str) -> None:
    # DeerflowError: the job ended meanwhile, or the controller is gone: nothing to cancel.
    with contextlib.suppress(DeerflowError):
        await client.cancel(job_id, reason="the caller cancelled the drop-in call", timeout_s=5)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_shared: dict[str, ClusterConnection] = {}
_shared_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def connect(
    address: str | None = None, *, tracer_provider: TracerProvider | None = None
) -> ClusterConnection:
    """The process's shared connection to the controller at ``address`` (default
    ``$DEERFLOW_CONTROLLER``), created on first use with ``ClusterSettings.from_env()`` and
    ``tracer_provider`` (default: OpenTelemetry's global one). Thread-safe. Raises
    :class:`ControllerNotConfiguredError` when no address is known; connecting itself is lazy
    (an unreachable controller fails the first call with UnavailableError)."""
    resolved = controller_address(address)
    with _shared_lock:
        conn = _shared.get(resolved)
        if conn is None or conn._closed or conn._pid != os.getpid():
            conn = _shared[resolved] = ClusterConnection(resolved, tracer_provider=tracer_provider)
        return conn


def close_all() -> None:
    """Close every shared connection (registered at interpreter exit)."""
    with _shared_lock:
        conns = list(_shared.values())
        _shared.clear()
    for conn in conns:
        conn.close()


atexit.register(close_all)
