"""A drop-in for DeerFlow 2.0's ``SubagentExecutor``: each sub-agent run is a task of the
cluster's ``subagent`` handler (see :mod:`deerflow_dropins.subagent_handler`) instead of a job
for the 3 + 3 thread pools every request of the process shares.

DeerFlow's ``task`` tool takes these names from here instead of ``deerflow.subagents`` and
``deerflow.subagents.executor``, and nothing else changes (its sub-agent configs stay DeerFlow's)::

    from deerflow_dropins.subagents import (
        SubagentExecutor, SubagentStatus, cleanup_background_task, get_background_task_result,
        request_cancel_background_task,
    )

Same names and signatures: ``SubagentExecutor(config, tools, ...)``, ``execute(task)``,
``execute_async(task, task_id=None) -> execution_id``, the process-wide registry functions,
``SubagentResult`` and ``SubagentStatus`` with the same fields and values. What crosses the wire
is data: the sub-agent's name (``config.name``), the task text, the system prompt, the names of
its tools (after ``config.tools``/``disallowed_tools``), the model name, ``max_turns``, the
token budget and trace ids. The sub-agent itself (graph, tools, model clients) is installed on
the agents. Process-local arguments (``app_config``, ``sandbox_state``, ``thread_data``,
``extensions``) are accepted and stay here.

The task runs with ``timeout_s = config.timeout_seconds`` (start-to-close: the agent cancels the
run when it passes, and the result is TIMED_OUT) and no retries, as DeerFlow runs a sub-agent
once. The result holder follows the cluster's events as they are pushed (no 5 s polling):
PENDING until an agent starts the run, RUNNING, then the terminal status with ``result``,
``error``, ``stop_reason`` (turn_capped / token_capped), ``ai_messages`` and
``token_usage_records``. :func:`subagent_events` (and :meth:`SubagentExecutor.stream`) yields
DeerFlow's stream events, ``task_started``, ``task_running``, then one of ``task_completed``,
``task_failed``, ``task_cancelled``, ``task_timed_out``; while the run goes on, a
``task_progress`` event (ours, not DeerFlow's: ``progress`` 0-1 or None and ``detail``, e.g.
"turn 3/50: 4200 tokens so far") at most once a second, from the handler's ``ctx.progress()``
reports that the controller streams as PROGRESS events. The AI messages themselves travel with
the result (a progress report holds 256 characters), so the ``task_running`` events with AI
messages arrive together just before the terminal event, as DeerFlow's poller emits the
messages it finds at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import threading
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from deerflow_dropins._cluster import connect, controller_address

if TYPE_CHECKING:
    from deerflow_controller.client import TaskEvent

__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "MAX_CONCURRENT_SUBAGENTS",
    "TOKEN_BUDGET_ENV",
    "SubagentConfig",
    "SubagentExecutor",
    "SubagentResult",
    "SubagentStatus",
    "cleanup_background_task",
    "get_background_task_result",
    "list_background_tasks",
    "request_cancel_background_task",
    "subagent_events",
]

logger = logging.getLogger(__name__)

MAX_CONCURRENT_SUBAGENTS = 3
"""DeerFlow's name, kept for its imports. It capped one process; here the agents' ``subagent``
slots (``--handler-slots subagent=N`` on each) cap the whole cluster."""

DEFAULT_TOKEN_BUDGET = 2_000_000
"""DeerFlow 2.0's sub-agent budget when summarization is off (1 M when on)."""

TOKEN_BUDGET_ENV = "DEERFLOW_SUBAGENT_TOKEN_BUDGET"
"""The token budget when the constructor is given none (DeerFlow's ``task`` tool gives none)."""

MAX_TIMEOUT_S = 7 * 86400.0
TERMINAL_EVENTS = frozenset({"task_completed", "task_failed", "task_cancelled", "task_timed_out"})


class SubagentStatus(Enum):
    """DeerFlow 2.0's statuses, same values."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        SubagentStatus.COMPLETED,
        SubagentStatus.FAILED,
        SubagentStatus.CANCELLED,
        SubagentStatus.TIMED_OUT,
    }
)


@dataclass
class SubagentConfig:
    """DeerFlow 2.0's sub-agent configuration, for callers without DeerFlow (DeerFlow's own
    ``SubagentConfig`` works as well: any object with these attributes does)."""

    name: str
    description: str = ""
    system_prompt: str | None = None
    tools: list[str] | None = None
    disallowed_tools: list[str] | None = field(default_factory=lambda: ["task"])
    skills: list[str] | None = None
    model: str = "inherit"
    max_turns: int = 50
    timeout_seconds: int = 900


class _ConfigLike(Protocol):
    name: str
    system_prompt: str | None
    tools: list[str] | None
    disallowed_tools: list[str] | None
    model: str
    max_turns: int
    timeout_seconds: int


@dataclass
class SubagentResult:
    """One run's state, as DeerFlow 2.0 keeps it. ``job_id`` names the run's cluster job;
    ``events`` are the stream events emitted so far (see :func:`subagent_events`)."""

    task_id: str
    trace_id: str
    status: SubagentStatus
    external_task_id: str | None = field(default=None, kw_only=True)
    result: str | None = None
    error: str | None = None
    stop_reason: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    ai_messages: list[dict[str, Any]] | None = None
    token_usage_records: list[dict[str, int | str | None]] = field(default_factory=list)
    usage_reported: bool = False
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    job_id: str = field(default="", kw_only=True)
    address: str = field(default="", kw_only=True, repr=False)
    """The controller the run was submitted to."""
    events: list[dict[str, Any]] = field(default_factory=list, kw_only=True, repr=False)
    _state_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = field(
        default_factory=list, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.ai_messages is None:
            self.ai_messages = []

    def update_token_usage_records(self, records: list[dict[str, int | str | None]]) -> None:
        with self._state_lock:
            if not self.status.is_terminal:
                self.token_usage_records = list(records)

    def try_set_terminal(
        self,
        status: SubagentStatus,
        *,
        result: str | None = None,
        error: str | None = None,
        stop_reason: str | None = None,
        completed_at: datetime | None = None,
        ai_messages: list[dict[str, Any]] | None = None,
        token_usage_records: list[dict[str, int | str | None]] | None = None,
    ) -> bool:
        """Set a terminal status once; later calls change nothing and return False."""
        if not status.is_terminal:
            raise ValueError(f"Status {status} is not terminal")
        with self._state_lock:
            if self.status.is_terminal:
                return False
            if result is not None:
                self.result = result
            if error is not None:
                self.error = error
            if stop_reason is not None:
                self.stop_reason = stop_reason
            if ai_messages is not None:
                self.ai_messages = ai_messages
            if token_usage_records is not None:
                self.token_usage_records = token_usage_records
            self.completed_at = completed_at or datetime.now()
            self.status = status
            return True

    def _emit(self, event: dict[str, Any]) -> None:
        """Record a stream event and hand it to every listener's loop (thread-safe)."""
        with self._state_lock:
            self.events.append(event)
            listeners = list(self._listeners)
        for loop, queue in listeners:
            # A listener whose loop has closed stopped listening: nothing to hand it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, event)


# --------------------------------------------------------------------- the registry

_background_tasks: dict[str, SubagentResult] = {}
_background_tasks_lock = threading.Lock()


def get_background_task_result(execution_id: str) -> SubagentResult | None:
    with _background_tasks_lock:
        return _background_tasks.get(execution_id)


def list_background_tasks() -> list[SubagentResult]:
    with _background_tasks_lock:
        return list(_background_tasks.values())


def cleanup_background_task(execution_id: str) -> None:
    """Forget a finished run (an unfinished one stays, as in DeerFlow)."""
    with _background_tasks_lock:
        result = _background_tasks.get(execution_id)
        if result is not None and (result.status.is_terminal or result.completed_at is not None):
            del _background_tasks[execution_id]


def request_cancel_background_task(execution_id: str) -> None:
    """Cancel a run: its cluster task is cancelled (the agent stops the sub-agent) and the
    result ends CANCELLED. Never blocks."""
    result = get_background_task_result(execution_id)
    if result is None:
        return
    result.cancel_event.set()
    if result.job_id and result.address:
        connect(result.address).spawn(_cancel(result.address, result.job_id))


async def _cancel(address: str, job_id: str) -> None:
    """Cancel a run's job (on the background loop)."""
    try:
        await connect(address).client.cancel(job_id, reason="cancelled by the lead agent")
    except Exception as exc:  # the controller may be gone; the run's timeout still holds
        logger.warning("could not cancel sub-agent job %s: %s", job_id, exc)


async def subagent_events(execution_id: str) -> AsyncIterator[dict[str, Any]]:
    """DeerFlow's stream events of a run, from the first, until its terminal one: the same
    dicts DeerFlow's ``task`` tool writes to the stream (``type``, ``task_id``, ...). Call it
    from any event loop; raises KeyError for an unknown ``execution_id``."""
    result = get_background_task_result(execution_id)
    if result is None:
        raise KeyError(f"no sub-agent run {execution_id!r} in this process")
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    entry = (asyncio.get_running_loop(), queue)
    with result._state_lock:
        backlog = list(result.events)
        result._listeners.append(entry)
    try:
        for event in backlog:
            yield event
            if event["type"] in TERMINAL_EVENTS:
                return
        while True:
            event = await queue.get()
            yield event
            if event["type"] in TERMINAL_EVENTS:
                return
    finally:
        with result._state_lock:
            result._listeners.remove(entry)


# --------------------------------------------------------------------- the executor


class SubagentExecutor:
    """Runs sub-agents on the cluster; DeerFlow 2.0's constructor and methods.

    ``address`` is the controller (default ``$DEERFLOW_CONTROLLER``); ``handler`` the agents'
    handler name; ``token_budget`` the run's budget in tokens (default
    ``$DEERFLOW_SUBAGENT_TOKEN_BUDGET``, else :data:`DEFAULT_TOKEN_BUDGET`);
    ``heartbeat_timeout_s`` (0 = none) fails a run whose agent reports no turn for that long.
    Raises ValueError for a config the cluster would refuse."""

    def __init__(
        self,
        config: _ConfigLike,
        tools: Sequence[Any],
        app_config: Any | None = None,
        parent_model: str | None = None,
        sandbox_state: Any | None = None,
        thread_data: Any | None = None,
        thread_id: str | None = None,
        trace_id: str | None = None,
        user_id: str | None = None,
        user_role: str | None = None,
        oauth_provider: str | None = None,
        oauth_id: str | None = None,
        run_id: str | None = None,
        channel_user_id: str | None = None,
        is_internal: bool = False,
        authz_attributes: Mapping[str, Any] | None = None,
        deerflow_trace_id: str | None = None,
        extensions: Any | None = None,
        *,
        address: str | None = None,
        handler: str = "subagent",
        token_budget: int | None = None,
        heartbeat_timeout_s: float = 0.0,
    ) -> None:
        token_budget = _token_budget() if token_budget is None else token_budget
        _check_config(config, token_budget, heartbeat_timeout_s)
        self.config = config
        self.app_config = app_config
        self.parent_model = parent_model
        self.sandbox_state = sandbox_state
        self.thread_data = thread_data
        self.thread_id = thread_id
        self.trace_id = trace_id or str(uuid.uuid4())[:8]
        self.user_id = user_id
        self.run_id = run_id
        self.deerflow_trace_id = deerflow_trace_id
        self.extensions = extensions
        self.address = controller_address(address)
        self.handler = handler
        self.token_budget = token_budget
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.model_name = config.model if config.model != "inherit" else (parent_model or "")
        names = [str(getattr(t, "name", t)) for t in tools]
        if config.tools is not None:
            names = [n for n in names if n in set(config.tools)]
        if config.disallowed_tools is not None:
            names = [n for n in names if n not in set(config.disallowed_tools)]
        self.tool_names = names

    # ----------------------------------------------------------------- DeerFlow's API

    def execute(self, task: str, result_holder: SubagentResult | None = None) -> SubagentResult:
        """Run one sub-agent and wait for its outcome (blocks the calling thread; from async
        code use :meth:`aexecute`). Never raises for the run's failure: see ``status``."""
        conn = connect(self.address)
        if conn.in_own_loop():
            raise RuntimeError("execute() cannot wait on the drop-ins' own loop; use aexecute()")
        result = result_holder or self._new_result(None)
        return conn.spawn(self._run(task, result)).result()

    async def aexecute(
        self, task: str, result_holder: SubagentResult | None = None
    ) -> SubagentResult:
        """:meth:`execute` for async callers: awaits without blocking the loop."""
        result = result_holder or self._new_result(None)
        return await asyncio.wrap_future(connect(self.address).spawn(self._run(task, result)))

    def execute_async(self, task: str, task_id: str | None = None) -> str:
        """Start a run in the background; return its execution id for
        :func:`get_background_task_result`. Never blocks."""
        result = self._new_result(task_id)
        connect(self.address).spawn(self._run(task, result))
        return result.task_id

    async def stream(self, task: str, task_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Start a run and yield its stream events until the terminal one."""
        async for event in subagent_events(self.execute_async(task, task_id)):
            yield event

    # ----------------------------------------------------------------- the run

    def _new_result(self, external_task_id: str | None) -> SubagentResult:
        execution_id = str(uuid.uuid4())
        result = SubagentResult(
            task_id=execution_id,
            external_task_id=external_task_id,
            trace_id=self.trace_id,
            status=SubagentStatus.PENDING,
            address=self.address,
        )
        with _background_tasks_lock:
            _background_tasks[execution_id] = result
        return result

    def payload(self, task: str) -> dict[str, Any]:
        """What the ``subagent`` handler receives (data only)."""
        metadata = {
            "trace_id": self.trace_id,
            "deerflow_trace_id": self.deerflow_trace_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "user_id": self.user_id,
        }
        return {
            "subagent": self.config.name,
            "task": task,
            "system_prompt": self.config.system_prompt,
            "tools": self.tool_names if self.config.tools is not None else None,
            "model": self.model_name,
            "max_turns": self.config.max_turns,
            "token_budget": self.token_budget,
            "metadata": {k: v for k, v in metadata.items() if isinstance(v, str) and v},
        }

    def _event(self, run: SubagentResult, kind: str, **fields: Any) -> None:
        event = {"type": kind, "task_id": run.external_task_id or run.task_id, **fields}
        if self.model_name:
            event.setdefault("model_name", self.model_name)
        run._emit(event)

    async def _run(self, task: str, result: SubagentResult) -> SubagentResult:
        """Submit the run and follow its events to the end (on the background loop)."""
        from deerflow_controller.client import Task

        client = connect(self.address).client
        spec = Task(
            id="subagent",
            handler=self.handler,
            payload=self.payload(task),
            timeout_s=float(self.config.timeout_seconds),
            max_retries=0,
            heartbeat_timeout_s=self.heartbeat_timeout_s,
            cache="off",
        )
        try:
            handle = await client.submit(
                [spec], job_id=result.task_id.replace("-", ""), name=f"subagent:{self.config.name}"
            )
        except Exception as exc:
            self._fail(result, f"the sub-agent could not be submitted: {exc}")
            return result
        result.job_id = handle.job_id
        self._event(result, "task_started", description=task.strip().split("\n")[0][:200])
        if result.cancel_event.is_set():  # cancelled while it was being submitted
            await _cancel(self.address, handle.job_id)
        try:
            async for ev in client.events(handle.job_id):
                if ev.state == "RUNNING" and result.status is SubagentStatus.PENDING:
                    with result._state_lock:
                        result.status = SubagentStatus.RUNNING
                        result.started_at = datetime.now()
                    self._event(result, "task_running", message=None, agent_id=ev.agent_id)
                elif ev.state == "PROGRESS":
                    # What the handler reports each turn ("turn 3/50: 4200 tokens so far"), at
                    # most one a second: a sign of life the lead can show while it runs.
                    fraction = ev.progress if ev.progress >= 0 else None
                    self._event(result, "task_progress", progress=fraction, detail=ev.detail)
                elif ev.terminal:
                    self._finish(result, ev)
                    return result
            self._fail(result, f"job {handle.job_id} ended without the sub-agent's outcome")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the controller stayed unreachable past the client's retries
            self._fail(result, f"lost the sub-agent's job {handle.job_id}: {exc}")
        return result

    def _fail(self, result: SubagentResult, error: str) -> None:
        if result.try_set_terminal(SubagentStatus.FAILED, error=error):
            self._event(result, "task_failed", error=error, usage=None)

    def _finish(self, result: SubagentResult, ev: TaskEvent) -> None:
        if ev.state == "SUCCEEDED":
            try:
                out = json.loads(ev.output)
            except ValueError:
                out = None
            if not isinstance(out, dict):
                self._fail(result, f"handler {self.handler!r} did not answer like a sub-agent")
                return
            messages = list(out.get("ai_messages") or [])
            records = list(out.get("token_usage_records") or [])
            usage = out.get("token_usage")
            for i, message in enumerate(messages):
                self._event(
                    result,
                    "task_running",
                    message=message,
                    message_index=i + 1,
                    total_messages=len(messages),
                    usage=usage,
                )
            completed = out.get("status") == "completed"
            status = SubagentStatus.COMPLETED if completed else SubagentStatus.FAILED
            result.try_set_terminal(
                status,
                result=out.get("result"),
                error=out.get("error"),
                stop_reason=out.get("stop_reason"),
                ai_messages=messages,
                token_usage_records=records,
            )
            if completed:
                self._event(result, "task_completed", result=result.result, usage=usage)
            else:
                self._event(result, "task_failed", error=result.error, usage=usage)
        elif ev.state == "TIMED_OUT":
            error = f"Execution timed out after {self.config.timeout_seconds} seconds"
            result.try_set_terminal(SubagentStatus.TIMED_OUT, error=error)
            self._event(result, "task_timed_out", error=error, usage=None)
        elif ev.state == "CANCELLED":
            result.try_set_terminal(SubagentStatus.CANCELLED, error="Cancelled by user")
            self._event(result, "task_cancelled", error="Cancelled by user", usage=None)
        else:
            self._fail(result, ev.error or f"the sub-agent's task ended {ev.state}")


def _token_budget() -> int:
    raw = os.environ.get(TOKEN_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_TOKEN_BUDGET
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"{TOKEN_BUDGET_ENV} must be a whole number of tokens, got {raw!r}"
        ) from None


def _check_config(config: _ConfigLike, token_budget: int, heartbeat_timeout_s: float) -> None:
    name = getattr(config, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"the sub-agent config needs a name, got {name!r}")
    timeout = config.timeout_seconds
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"sub-agent {name!r}: timeout_seconds must be a number")
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise ValueError(
            f"sub-agent {name!r}: timeout_seconds must be in (0, {MAX_TIMEOUT_S:g}], got {timeout}"
        )
    for label, value in (("max_turns", config.max_turns), ("token_budget", token_budget)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"sub-agent {name!r}: {label} must be an int >= 1, got {value!r}")
    if not math.isfinite(heartbeat_timeout_s) or heartbeat_timeout_s < 0:
        raise ValueError(
            f"sub-agent {name!r}: heartbeat_timeout_s must be >= 0, got {heartbeat_timeout_s!r}"
        )
