"""A LangChain chat model whose every generation is an ``llm`` task on the cluster, and DeerFlow
1.x's ``get_llm_by_type`` returning it.

Each ``invoke``/``ainvoke`` (and each generation LangGraph makes through it) submits one ``llm``
task drawing on the rate key ``llm/<account>/<model>`` with a token estimate (prompt characters
/ 4 + ``max_tokens``, or :attr:`ClusterChatModel.completion_estimate` when unset), so the
controller's cluster-wide limiter spaces the calls of every DeerFlow process, thread and
sub-agent against the provider's requests- and tokens-per-minute, retries 429s and transient
errors (DeerFlow 2.0's error classes) and corrects its token budget from the usage the provider
reports. The answer is an :class:`~langchain_core.messages.AIMessage` with ``usage_metadata``.

Swap the import in DeerFlow 1.x::

    # from src.llms.llm import get_llm_by_type
    from deerflow_dropins.chat_model import get_llm_by_type

or name the class in DeerFlow 2.0's ``config.yaml``
(``use: deerflow_dropins.chat_model:ClusterChatModel``, with ``model`` and ``max_tokens``).

What the cluster's ``llm`` handler sends the provider is ``model``, ``messages``,
``max_tokens``, ``temperature``, ``stop`` and the bound tools (``bind_tools``: OpenAI function
calling, the answer's ``tool_calls`` parsed as LangChain's): the provider's URL and key are the
agents' (``DEERFLOW_LLM_BASE_URL``, ``DEERFLOW_LLM_API_KEY``), never the caller's, so no secret
travels in a task. Streaming is not supported: a generation comes back whole.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from deerflow_controller.client import Task, TaskResult

from ._cluster import ClusterConnection, connect
from ._trace import call_trace, traced_call

__all__ = ["LLM_TYPES", "ClusterChatModel", "LLMType", "get_llm_by_type", "reset_llm_cache"]

LLMType = Literal["basic", "reasoning", "vision", "code"]
LLM_TYPES: dict[str, str] = {
    "basic": "BASIC_MODEL",
    "reasoning": "REASONING_MODEL",
    "vision": "VISION_MODEL",
    "code": "CODE_MODEL",
}
"""DeerFlow 1.x's LLM types and their conf.yaml sections."""
CONF_ENV = "DEERFLOW_CONF_PATH"
"""Where :func:`get_llm_by_type` reads DeerFlow's conf.yaml (default ./conf.yaml)."""
DEFAULT_TIMEOUT_S = 600.0
"""Start-to-close of one attempt when the model sets no ``timeout`` (openai-python's default)."""


def _text_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(
                len(str(part.get("text", ""))) for part in content if isinstance(part, dict)
            )
        if m.get("tool_calls"):
            total += len(json.dumps(m["tool_calls"]))
    return total


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """The provider is not given stop sequences (the handler sends none): cut here instead."""
    cut = len(text)
    for s in stop or ():
        if s and (i := text.find(s)) >= 0:
            cut = min(cut, i)
    return text[:cut]


def _tool_choice(
    choice: str | dict[str, Any] | bool, tools: list[dict[str, Any]]
) -> str | dict[str, Any]:
    if isinstance(choice, dict):
        return choice
    if choice is True:
        if len(tools) != 1:
            raise ValueError(f"tool_choice=True needs exactly one tool, got {len(tools)}")
        choice = tools[0]["function"]["name"]
    if choice == "any":
        return "required"
    if choice in ("auto", "none", "required"):
        return choice
    names = [t["function"]["name"] for t in tools]
    if choice not in names:
        raise ValueError(f"tool_choice {choice!r} is not among the tools ({', '.join(names)})")
    return {"type": "function", "function": {"name": choice}}


def _tool_calls(raw: object) -> tuple[list[Any], list[Any]]:
    """The provider's ``tool_calls`` as LangChain's tool calls, and those whose arguments are
    not JSON as invalid tool calls."""
    calls: list[Any] = []
    invalid: list[Any] = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict):
            continue
        try:
            parsed = parse_tool_call(item, return_id=True)
        except Exception as e:  # OutputParserException: arguments that are not JSON
            invalid.append(make_invalid_tool_call(item, str(e)))
            continue
        if parsed is not None:
            calls.append(parsed)
    return calls, invalid


class ClusterChatModel(BaseChatModel):
    """A chat model that runs each generation as an ``llm`` task on the cluster.

    Blocks: ``invoke`` blocks its thread until the task's result arrives; ``ainvoke`` suspends
    only its caller. Fails: a task that ends without success raises
    :class:`~deerflow_controller.client.TaskFailedError` (its message names the state, the
    error kind and the provider's error); an unreachable controller raises ``UnavailableError``
    (after the cluster's own retries, so a caller retrying on top of them only adds load)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str = Field(alias="model")
    """The provider's model id, sent as ``model`` and part of the rate key."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Longest completion; sent to the provider and added to the token estimate."""
    timeout: float | None = Field(default=None, gt=0)
    """Start-to-close timeout of one attempt, seconds (default 600)."""
    max_retries: int | None = Field(default=None, ge=0)
    """Retries of a failed attempt on the cluster (None = the controller's default, by error
    class: see the README)."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature, sent to the provider when set."""
    controller: str | None = None
    """The controller's address; None = ``$DEERFLOW_CONTROLLER``."""
    cluster: ClusterConnection | None = Field(default=None, exclude=True)
    """A connection to use instead of the shared one for :attr:`controller`."""
    account: str | None = None
    """The provider account of the rate key ``llm/<account>/<model>`` (None =
    ``$DEERFLOW_LLM_ACCOUNT``, else ``default``)."""
    priority: int = 0
    call_deadline_s: float = Field(default=1800.0, ge=0)
    """The longest one generation may take on the cluster, waits for the rate limit and retries
    included (the task's schedule-to-close; 0 = no limit): past it the call raises
    TaskFailedError (TIMED_OUT) rather than waiting on."""
    completion_estimate: int = Field(default=512, ge=1)
    """Completion tokens assumed in the estimate when ``max_tokens`` is unset."""
    cluster_cache: Literal["default", "off", "on", "refresh"] = "default"
    """The cluster's result cache for these calls (``Task.cache``): "default" caches an LLM
    answer only for calls that ask ("on"); LangChain's own ``cache`` is separate."""

    @property
    def _llm_type(self) -> str:
        return "deerflow-cluster"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    # ----------------------------------------------------------------- the task

    def _connection(self) -> ClusterConnection:
        return self.cluster if self.cluster is not None else connect(self.controller)

    def rate_key(self, conn: ClusterConnection | None = None) -> str:
        """The rate key each call draws on, ``llm/<account>/<model>``."""
        settings = (conn or self._connection()).settings
        return f"llm/{self.account or settings.llm_account}/{self.model_name}"

    def _task(self, conn: ClusterConnection, messages: list[BaseMessage], **options: Any) -> Task:
        wire = convert_to_openai_messages(messages)
        assert isinstance(wire, list)
        payload: dict[str, Any] = {"model": self.model_name, "messages": wire}
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            payload["temperature"] = self.temperature
        for name in ("tools", "tool_choice", "stop"):
            if options.get(name):
                payload[name] = options[name]
        completion = self.max_tokens or self.completion_estimate
        # The tools' schemas are part of the prompt the provider counts.
        tools = payload.get("tools")
        prompt_chars = _text_chars(wire) + (len(json.dumps(tools)) if tools else 0)
        return Task(
            "llm",
            "llm",
            payload,
            priority=self.priority,
            timeout_s=self.timeout or DEFAULT_TIMEOUT_S,
            max_retries=-1 if self.max_retries is None else self.max_retries,
            rate_keys=(self.rate_key(conn),),
            est_tokens=prompt_chars / 4 + completion,
            tenant=conn.settings.tenant,
            cache=self.cluster_cache,
            schedule_to_close_s=self.call_deadline_s,
        )

    def _result(self, result: TaskResult, stop: Sequence[str] | None) -> ChatResult:
        doc = result.json()  # TaskFailedError when the task did not succeed
        if not isinstance(doc, dict):
            raise ValueError("the llm handler's answer is not a JSON object")
        raw_usage = doc.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        prompt = int(usage.get("prompt_tokens", 0))
        completion = int(usage.get("completion_tokens", 0))
        metadata = UsageMetadata(
            input_tokens=prompt,
            output_tokens=completion,
            total_tokens=int(usage.get("total_tokens", prompt + completion)),
        )
        model = str(doc.get("model") or self.model_name)
        finish = doc.get("finish_reason")
        tool_calls, invalid = _tool_calls(doc.get("tool_calls"))
        message = AIMessage(
            content=_cut_at_stop(str(doc.get("content") or ""), stop),
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            usage_metadata=metadata,
            response_metadata={
                "model_name": model,
                "finish_reason": finish,
                "deerflow_job_id": result.job_id,
                "deerflow_agent_id": result.agent_id,
                "deerflow_attempt": result.attempt,
                "deerflow_cache_layer": result.cache_layer,
            },
        )
        return ChatResult(
            generations=[
                ChatGeneration(message=message, generation_info={"finish_reason": finish})
            ],
            llm_output={"token_usage": dict(usage), "model_name": model},
        )

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model (OpenAI function calling, passed on by the ``llm``
        handler); ``tool_choice`` is "auto", "none", "required" (or "any"), a tool's name, or
        True for the only tool. The answer's ``tool_calls`` are parsed as LangChain's."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _tool_choice(tool_choice, formatted)
        return super().bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        conn = self._connection()
        task = self._task(conn, messages, stop=stop, **kwargs)
        with traced_call("llm", call_trace(run_manager), conn.tracer_provider):
            result = conn.run_task(task, name=f"deerflow llm {self.model_name}")
        return self._result(result, stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        conn = self._connection()
        task = self._task(conn, messages, stop=stop, **kwargs)
        with traced_call("llm", call_trace(run_manager), conn.tracer_provider):
            result = await conn.arun_task(task, name=f"deerflow llm {self.model_name}")
        return self._result(result, stop)


# ------------------------------------------------------------------------- get_llm_by_type

_llm_cache: dict[str, ClusterChatModel] = {}


def _load_conf(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """DeerFlow's conf.yaml as a dict ({} when the default path does not exist); values
    written ``$NAME`` are read from the environment, as DeerFlow reads them."""
    explicit = path is not None or bool(os.environ.get(CONF_ENV))
    file = Path(path if path is not None else os.environ.get(CONF_ENV) or "conf.yaml")
    if not file.exists():
        if explicit:
            raise FileNotFoundError(f"DeerFlow's configuration {file} does not exist")
        return {}
    yaml: Any = importlib.import_module("yaml")  # PyYAML: a dependency of langchain-core
    doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{file} is not a YAML mapping")
    return doc


def _from_env(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return os.environ.get(value[1:], "")
    return value


def get_llm_by_type(
    llm_type: LLMType, *, conf_path: str | os.PathLike[str] | None = None
) -> ClusterChatModel:
    """DeerFlow 1.x's ``get_llm_by_type``: the chat model of an LLM type, cached per type.

    Reads the type's section of DeerFlow's conf.yaml (``BASIC_MODEL``...; the file at
    ``conf_path``, else ``$DEERFLOW_CONF_PATH``, else ./conf.yaml when it exists) overridden by
    DeerFlow's ``<TYPE>_MODEL__<key>`` environment variables, and keeps what the cluster uses:
    ``model``, ``max_tokens``, ``timeout``, ``max_retries``, ``temperature``. ``api_key`` and
    ``base_url`` are the agents' settings, not the caller's. Raises ValueError for an unknown
    type or a type with no model configured."""
    section = LLM_TYPES.get(llm_type)
    if section is None:
        raise ValueError(f"Unknown LLM type: {llm_type}")
    if llm_type in _llm_cache:
        return _llm_cache[llm_type]
    conf = _load_conf(conf_path).get(section) or {}
    if not isinstance(conf, dict):
        raise ValueError(f"Invalid LLM configuration for {llm_type}: {section} is not a mapping")
    prefix = f"{llm_type.upper()}_MODEL__"
    env = {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}
    merged = {k.lower(): _from_env(v) for k, v in {**conf, **env}.items()}
    if not merged.get("model"):
        raise ValueError(f"No configuration found for LLM type: {llm_type}")
    kept = {
        k: merged[k]
        for k in ("max_tokens", "timeout", "max_retries", "temperature")
        if merged.get(k) not in (None, "")
    }
    model = ClusterChatModel(model=str(merged["model"]), **kept)
    _llm_cache[llm_type] = model
    return model


def reset_llm_cache() -> None:
    """Forget the models :func:`get_llm_by_type` made (after changing the configuration)."""
    _llm_cache.clear()
