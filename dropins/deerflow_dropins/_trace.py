"""DeerFlow's trace carried into the cluster: every drop-in call runs inside one CLIENT span,
``deerflow_dropins.<call>``, whose context the SDK's ``deerflow.submit`` span (and so the
controller's ``deerflow.schedule`` and the agent's ``deerflow.execute``) continues.

Which trace the span joins, in order:

1. the OpenTelemetry span current where the tool or model is called (DeerFlow instrumented with
   OpenTelemetry, or any caller that started a span): the cluster's spans are its descendants;
2. else DeerFlow's request trace id (2.0's ``X-Trace-Id``, carried as ``deerflow_trace_id`` in
   the run's metadata or bound in ``deerflow.trace_context``) when it is 32 hex digits, which is
   what DeerFlow generates (``uuid4().hex``): the span's trace id *is* that id, so searching a
   tracing backend for the id DeerFlow logged finds the cluster's spans;
3. else a trace of its own.

LangChain's run id and parent run id (what LangSmith and Langfuse show) and DeerFlow's trace id
go on the span as attributes (``langchain.run_id``, ``langchain.parent_run_id``,
``deerflow.trace_id``), so each side can be found from the other. They are not task labels:
a task's labels are placement constraints (an agent must carry every one), so a run id there
would make the task unplaceable.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TracerProvider,
)

__all__ = ["CallTrace", "call_trace", "traced_call"]

METADATA_TRACE_KEY = "deerflow_trace_id"
"""Where DeerFlow 2.0 puts its request trace id in a run's metadata (``config.metadata``)."""
_HEX32 = re.compile(r"[0-9a-f]{32}")
_MAX_ID_CHARS = 128


@dataclass(frozen=True)
class CallTrace:
    """The ids that tie one drop-in call to DeerFlow's own tracing ("" when unknown)."""

    run_id: str = ""
    """LangChain's run id of this tool or model call (LangSmith's run)."""
    parent_run_id: str = ""
    """The run that made the call (the agent node, the chain)."""
    deerflow_trace_id: str = ""
    """DeerFlow's request trace id (``X-Trace-Id``)."""

    def attributes(self, call: str) -> dict[str, str]:
        attrs = {"deerflow.dropin": call}
        if self.run_id:
            attrs["langchain.run_id"] = self.run_id
        if self.parent_run_id:
            attrs["langchain.parent_run_id"] = self.parent_run_id
        if self.deerflow_trace_id:
            attrs["deerflow.trace_id"] = self.deerflow_trace_id
        return attrs


def _clean(value: object) -> str:
    """A printable id of bounded length, or "" (ids come from other people's code)."""
    text = str(value).strip() if value is not None else ""
    if not text or len(text) > _MAX_ID_CHARS or not text.isprintable():
        return ""
    return text


def _deerflow_context_trace_id() -> str:
    """DeerFlow 2.0's bound request trace id, when DeerFlow is loaded in this process (never
    imported from here: the drop-ins do not depend on DeerFlow)."""
    module = sys.modules.get("deerflow.trace_context")
    getter = getattr(module, "get_current_trace_id", None)
    if getter is None:
        return ""
    try:
        return _clean(getter())
    except Exception:  # someone else's code: a failure here must not fail the call
        return ""


def call_trace(run_manager: Any) -> CallTrace:
    """The ids of a LangChain callback manager for a run (a tool's or a chat model's
    ``run_manager``; None gives what the ambient context knows)."""
    if run_manager is None:
        return CallTrace(deerflow_trace_id=_deerflow_context_trace_id())
    metadata = getattr(run_manager, "metadata", None)
    from_metadata = metadata.get(METADATA_TRACE_KEY) if isinstance(metadata, Mapping) else None
    return CallTrace(
        run_id=_clean(getattr(run_manager, "run_id", None)),
        parent_run_id=_clean(getattr(run_manager, "parent_run_id", None)),
        deerflow_trace_id=_clean(from_metadata) or _deerflow_context_trace_id(),
    )


def _parent_context(ids: CallTrace) -> otel_context.Context | None:
    """The context to start the call's span in: None (the current one) when a span is current
    or DeerFlow's trace id cannot be a W3C trace id; else a remote parent in that trace."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    trace_id = ids.deerflow_trace_id.lower()
    if not _HEX32.fullmatch(trace_id) or int(trace_id, 16) == 0:
        return None
    # The parent span id must be non-zero; derive it from the run that made the call so it is
    # stable for that run (DeerFlow exports no span of that id: backends show the call's span
    # as the trace's root with a missing parent, which they handle).
    seed = (ids.parent_run_id or ids.run_id or trace_id).replace("-", "")
    try:
        span_id = int(seed[-16:], 16) or 1
    except ValueError:
        span_id = int(trace_id[-16:], 16) or 1
    parent = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextlib.contextmanager
def traced_call(
    call: str, ids: CallTrace, provider: TracerProvider | None = None
) -> Iterator[trace.Span]:
    """Run the block inside the call's CLIENT span (see the module docstring), current for the
    block, so a task submitted in it continues it. An exception leaving the block is recorded
    on the span."""
    tracer = trace.get_tracer("deerflow_dropins", tracer_provider=provider)
    with tracer.start_as_current_span(
        f"deerflow_dropins.{call}",
        context=_parent_context(ids),
        kind=SpanKind.CLIENT,
        attributes=ids.attributes(call),
    ) as span:
        yield span
