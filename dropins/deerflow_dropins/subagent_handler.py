"""The agent-side ``subagent`` handler: runs one DeerFlow-style sub-agent (a LangGraph graph, or
any langchain-core ``Runnable``) per task, with its turn and token budgets enforced.

Enable it on an agent that has the ``deerflow`` extra installed::

    DEERFLOW_SUBAGENTS="general-purpose=my_agents.graphs:general_purpose" \\
        deerflow-agent --handler deerflow_dropins.subagent_handler:subagent

(it is not a default entry point: langchain-core is an extra). The task's payload names the
sub-agent; the payload never carries code or an import path. Names resolve, in this order, to:
the mapping given to :func:`make_subagent_handler`; ``DEERFLOW_SUBAGENTS`` on the agent
(``name=module:attr`` pairs, comma-separated, set by the operator); the ``deerflow.subagents``
entry-point group. The object found is a ``Runnable`` (used for every run; a compiled graph is
safe to share) or a factory ``f(request: SubagentRequest) -> Runnable`` (sync or async), which
gets the run's tool names, model and system prompt as data.

The payload (JSON) is what ``deerflow_dropins.subagents.SubagentExecutor`` sends: ``subagent``
(name), ``task`` (the prompt), ``system_prompt``, ``tools`` (names, or null for all), ``model``,
``max_turns``, ``token_budget`` and ``metadata`` (trace ids, strings). The runnable is invoked
with ``{"messages": [SystemMessage?, HumanMessage(task)]}``, DeerFlow's agent state, and
``recursion_limit = max_turns`` as DeerFlow does.

Inputs (docs/INPUTS.md): a ``subagent`` task submitted with ``depends_on`` and ``inputs`` gets
its dependencies' outputs twice, as data: the state's ``inputs`` key, a ``dict`` task id -> text
in depends_on order (a sub-agent dependency gives its ``result``, any other its UTF-8 output),
and one ``HumanMessage`` before the task listing each under a ``## <task id>`` heading, for
graphs that read only ``messages``. A task that asked for no inputs gets neither (the state is
exactly ``{"messages": [...]}``).

Budgets, as DeerFlow 2.0 reports them: a *turn* is one chat-model call. The run stops before a
call past ``max_turns`` (or at a graph's ``GraphRecursionError``: ``stop_reason="turn_capped"``)
and before any call once the reported token usage reached ``token_budget``
(``"token_capped"``; the response that crosses the budget is kept, so a run may overshoot by
one response). A capped run that produced text completes with that text as its result; one that
did not fails, still with its stop reason. Each turn, tool end and model answer reports
``ctx.progress()`` (fraction = turns used / max_turns). Token usage (the models' own
``usage_metadata``) comes back in the output and as ``usage.*`` result metadata. When the
attempt is cancelled (its ``timeout_seconds`` passed, or the lead cancelled), an async
sub-agent stops at its next await; a blocking one running in a thread cannot be stopped, but
its next model call is refused.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig

from deerflow_agent import FatalError, Handler, HandlerKind, HandlerResult, TaskContext
from deerflow_common import signals

__all__ = [
    "ENTRY_POINT_GROUP",
    "SUBAGENTS_ENV",
    "SubagentRequest",
    "dependency_inputs",
    "inputs_message",
    "make_subagent_handler",
    "subagent",
]

ENTRY_POINT_GROUP = "deerflow.subagents"
SUBAGENTS_ENV = "DEERFLOW_SUBAGENTS"

MAX_TASK_CHARS = 200_000
MAX_NAME_CHARS = 128
MAX_TOOLS = 256
MAX_TURNS = 10_000
MAX_TOKEN_BUDGET = 1_000_000_000
MAX_METADATA = 32
MAX_RESULT_CHARS = 200_000
"""Longest result text sent back; longer is cut (the controller bounds outputs too)."""
MAX_INPUTS = 256
"""Dependencies' outputs passed to one run, at most (in depends_on order)."""
MAX_INPUT_CHARS = 50_000
"""Longest text of one dependency's output given to the run; longer is cut, saying so."""
MAX_MESSAGES = 50
MAX_MESSAGE_CHARS = 4_000
"""The output keeps the last MAX_MESSAGES AI messages, each cut to MAX_MESSAGE_CHARS: enough
for the lead's task_running cards, bounded whatever the run's length."""


@dataclass(frozen=True)
class SubagentRequest:
    """One run, as the payload asks for it (all data)."""

    name: str
    task: str
    system_prompt: str | None = None
    tools: tuple[str, ...] | None = None
    model: str = ""
    max_turns: int = 50
    token_budget: int = 1_000_000
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: bytes) -> SubagentRequest:
        """Parse and check a payload; FatalError naming the field otherwise."""
        try:
            doc = json.loads(payload)
        except ValueError:
            raise FatalError("subagent: the payload is not JSON") from None
        if not isinstance(doc, dict):
            raise FatalError("subagent: the payload must be a JSON object")
        name = _text(doc, "subagent", MAX_NAME_CHARS, required=True)
        task = _text(doc, "task", MAX_TASK_CHARS, required=True)
        prompt = doc.get("system_prompt")
        if prompt is not None:
            prompt = _text(doc, "system_prompt", MAX_TASK_CHARS)
        tools = doc.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
                raise FatalError(f"subagent: 'tools' must be null or a list of at most {MAX_TOOLS}")
            if not all(isinstance(t, str) and 0 < len(t) <= MAX_NAME_CHARS for t in tools):
                raise FatalError("subagent: every name in 'tools' must be a non-empty string")
            tools = tuple(tools)
        metadata = doc.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA:
            raise FatalError(f"subagent: 'metadata' must be an object of at most {MAX_METADATA}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise FatalError("subagent: 'metadata' keys and values must be strings")
        return cls(
            name=name,
            task=task,
            system_prompt=prompt,
            tools=tools,
            model=_text(doc, "model", MAX_NAME_CHARS),
            max_turns=_int(doc, "max_turns", 50, MAX_TURNS),
            token_budget=_int(doc, "token_budget", 1_000_000, MAX_TOKEN_BUDGET),
            metadata={k[:MAX_NAME_CHARS]: v[:1024] for k, v in metadata.items()},
        )


def _text(doc: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise FatalError(f"subagent: payload field {key!r} must be a non-empty string")
    if len(value) > limit:
        raise FatalError(f"subagent: payload field {key!r} is over {limit} characters")
    return value


def _int(doc: Mapping[str, Any], key: str, default: int, limit: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise FatalError(f"subagent: payload field {key!r} must be an integer from 1 to {limit}")
    return value


# --------------------------------------------------------------------- finding sub-agents


class _Subagents:
    """Name -> Runnable or factory: the given mapping, then DEERFLOW_SUBAGENTS, then entry
    points. Looked up at each run (imports are cached by Python), so a bad entry fails the runs
    that name it, with its name, and nothing else."""

    def __init__(self, given: Mapping[str, object] | None) -> None:
        self.given = dict(given or {})

    def _configured(self) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item in os.environ.get(SUBAGENTS_ENV, "").split(","):
            name, sep, target = item.strip().partition("=")
            if sep and name.strip() and ":" in target:
                pairs[name.strip()] = target.strip()
        return pairs

    def names(self) -> list[str]:
        eps = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
        return sorted({*self.given, *self._configured(), *eps})

    def find(self, name: str) -> object:
        if name in self.given:
            return self.given[name]
        target = self._configured().get(name)
        try:
            if target is not None:
                module, _, attr = target.partition(":")
                obj: object = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
                return obj
            for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
                return ep.load()
        except (ImportError, AttributeError) as exc:
            raise FatalError(
                f"subagent {name!r} could not be loaded on this agent: {exc}"
            ) from None
        known = ", ".join(self.names()) or "none"
        raise FatalError(
            f"no sub-agent named {name!r} is installed on this agent (installed: {known}); "
            f"add it to {SUBAGENTS_ENV} or the {ENTRY_POINT_GROUP!r} entry points"
        )

    async def build(self, request: SubagentRequest) -> Runnable[Any, Any]:
        found = self.find(request.name)
        if not isinstance(found, Runnable):
            if not callable(found):
                raise FatalError(f"subagent {request.name!r} is neither a Runnable nor a factory")
            found = found(request)
            if inspect.isawaitable(found):
                found = await found
        if not isinstance(found, Runnable):
            raise FatalError(
                f"subagent {request.name!r}: its factory returned {type(found).__name__}, "
                "not a langchain-core Runnable"
            )
        return found


# --------------------------------------------------------------------- the run's guard


class _Capped(Exception):
    """Raised from a callback to stop the run before a model call it may not make."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Guard(BaseCallbackHandler):
    """Counts turns and tokens, keeps the AI messages, reports progress; raises :class:`_Capped`
    before a model call past a budget. Runs inline: on the agent's event loop, or in the worker
    thread of a blocking sub-agent (then its progress reports are handed to the loop)."""

    raise_error = True
    run_inline = True

    def __init__(self, ctx: TaskContext, request: SubagentRequest) -> None:
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.request = request
        self.turns = 0
        self.usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self.by_model: dict[str, dict[str, int]] = {}
        self.messages: list[dict[str, Any]] = []
        self.last_text = ""
        self.stopped = False

    def _before_call(self) -> None:
        if self.stopped:
            raise _Capped("cancelled")
        if self.turns >= self.request.max_turns:
            raise _Capped("turn_capped")
        if self.usage["total_tokens"] >= self.request.token_budget:
            raise _Capped("token_capped")
        self.turns += 1
        self._progress(f"turn {self.turns}/{self.request.max_turns}")

    def _progress(self, message: str) -> None:
        fraction = self.turns / self.request.max_turns
        if threading.get_ident() == self.loop_thread:
            self.ctx.progress(fraction, message)
        else:  # a blocking sub-agent's model call, in a worker thread: progress is loop-only
            self.loop.call_soon_threadsafe(self.ctx.progress, fraction, message)

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self._before_call()

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        self._before_call()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                if isinstance(generation, ChatGeneration):
                    self._answer(generation.message)
        self._progress(f"turn {self.turns}: {self.usage['total_tokens']} tokens so far")

    def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        self._progress(f"turn {self.turns}: tool {kwargs.get('name') or ''} done".rstrip())

    def _answer(self, message: BaseMessage) -> None:
        usage = getattr(message, "usage_metadata", None) or {}
        model = str(message.response_metadata.get("model_name") or self.request.model or "")
        record = self.by_model.setdefault(
            model, {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        )
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            n = usage.get(key)
            if isinstance(n, int) and n > 0:
                self.usage[key] += n
                record[key] += n
        text = _text_of(message)
        if text.strip():
            self.last_text = text
        entry: dict[str, Any] = {
            "type": "ai",
            "id": message.id,
            "content": text[:MAX_MESSAGE_CHARS],
        }
        calls = getattr(message, "tool_calls", None) or []
        if calls:
            entry["tool_calls"] = [{"name": c.get("name"), "id": c.get("id")} for c in calls]
        self.messages.append(entry)
        del self.messages[:-MAX_MESSAGES]


def _text_of(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def _final_text(final: Any) -> str:
    """The last AI message's text of a final state (``{"messages": [...]}``), an AIMessage or a
    str; "" when there is none."""
    if isinstance(final, str):
        return final
    if isinstance(final, AIMessage):
        return _text_of(final)
    messages: Sequence[Any] = final.get("messages", []) if isinstance(final, Mapping) else []
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return _text_of(message)
    return ""


# --------------------------------------------------------------------- dependencies' outputs


def dependency_inputs(inputs: Mapping[str, bytes]) -> dict[str, str]:
    """The task's inputs (``ctx.inputs``: its dependencies' outputs, in depends_on order) as
    text for the run: a sub-agent's output (a JSON object with ``status`` and ``result``) gives
    its ``result``, anything else its UTF-8 text; each cut to MAX_INPUT_CHARS."""
    texts: dict[str, str] = {}
    for task_id, raw in list(inputs.items())[:MAX_INPUTS]:
        text = raw.decode("utf-8", errors="replace")
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and "status" in doc and isinstance(doc.get("result"), str):
                text = doc["result"]
        if len(text) > MAX_INPUT_CHARS:
            text = text[:MAX_INPUT_CHARS] + f"\n[cut: {len(text) - MAX_INPUT_CHARS} more chars]"
        texts[task_id] = text
    return texts


def inputs_message(inputs: Mapping[str, str]) -> str:
    """The context message a run with inputs gets before its task: each dependency's output
    under a ``## <task id>`` heading."""
    parts = ["Results of the tasks this one depends on:"]
    parts += [f"## {task_id}\n{text}" for task_id, text in inputs.items()]
    return "\n\n".join(parts)


# --------------------------------------------------------------------- the handler


def make_subagent_handler(
    subagents: Mapping[str, object] | None = None, *, name: str = "subagent", slots: int = 0
) -> Handler:
    """A ``subagent`` handler that also knows ``subagents`` (name -> Runnable or factory);
    install it with ``--handler your_module:attr``. ``slots`` caps concurrent runs per agent."""
    found = _Subagents(subagents)

    async def run(ctx: TaskContext, payload: bytes) -> HandlerResult:
        request = SubagentRequest.from_payload(payload)
        runnable = await found.build(request)
        guard = _Guard(ctx, request)
        config: RunnableConfig = {
            "recursion_limit": request.max_turns,
            "callbacks": [guard],
            "tags": [f"subagent:{request.name}"],
            "run_name": f"subagent:{request.name}",
            "metadata": {**request.metadata, "deerflow_job_id": ctx.job_id},
        }
        messages: list[BaseMessage] = []
        if request.system_prompt:
            messages.append(SystemMessage(content=request.system_prompt))
        inputs = dependency_inputs(ctx.inputs)
        state: dict[str, Any] = {"messages": messages}
        if inputs:
            messages.append(HumanMessage(content=inputs_message(inputs)))
            state["inputs"] = inputs
        messages.append(HumanMessage(content=request.task))
        stop_reason: str | None = None
        final: Any = None
        try:
            final = await runnable.ainvoke(state, config)
        except _Capped as capped:
            stop_reason = capped.reason
        except Exception as exc:
            if type(exc).__name__ != "GraphRecursionError":  # langgraph's, not imported here
                detail = " ".join(str(exc).split())[:500] or type(exc).__name__
                raise FatalError(
                    f"sub-agent {request.name!r} failed after {guard.turns} turn(s): {detail}",
                    metadata=_usage_signals(guard),
                ) from None
            stop_reason = "turn_capped"
        finally:
            guard.stopped = True
        return _outcome(request, guard, final, stop_reason)

    return Handler(
        name,
        run,
        HandlerKind.IO,
        slots=slots,
        description="Run a DeerFlow sub-agent (a LangGraph graph or Runnable) by name.",
        nondeterministic=True,
        default_duration_s=120.0,
    )


def _usage_signals(guard: _Guard) -> dict[str, str]:
    return {
        signals.PROMPT_TOKENS: str(guard.usage["input_tokens"]),
        signals.COMPLETION_TOKENS: str(guard.usage["output_tokens"]),
        signals.TOTAL_TOKENS: str(guard.usage["total_tokens"]),
    }


def _outcome(
    request: SubagentRequest, guard: _Guard, final: Any, stop_reason: str | None
) -> HandlerResult:
    text = _final_text(final) if stop_reason is None else guard.last_text
    status, error = "completed", None
    if stop_reason is None and not text.strip():
        text = "No response generated"
    elif stop_reason is not None and not text.strip():
        status, text = "failed", ""
        error = {
            "turn_capped": f"Reached max_turns={request.max_turns}",
            "token_capped": f"Reached the token budget of {request.token_budget} tokens",
        }.get(stop_reason, "Cancelled")
    output = {
        "status": status,
        "result": text[:MAX_RESULT_CHARS] if status == "completed" else None,
        "error": error,
        "stop_reason": stop_reason,
        "turns": guard.turns,
        "token_usage": dict(guard.usage),
        "token_usage_records": [
            {"model": model or None, **usage} for model, usage in guard.by_model.items()
        ],
        "ai_messages": guard.messages,
    }
    return HandlerResult(json.dumps(output).encode(), _usage_signals(guard))


subagent = make_subagent_handler()
"""The handler to install: ``--handler deerflow_dropins.subagent_handler:subagent``."""
