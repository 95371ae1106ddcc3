"""The client's part of each task's trace: one ``deerflow.submit`` span per submit call, whose
W3C context every task of the job carries (``TaskSpec.trace_context``) to the controller and on
to the agent.

The submit span is a child of whatever span is current where ``submit`` is called (a DeerFlow
graph node, a tool call), so a job's tasks join the caller's trace: each task is one connected
subtree, submit -> ``deerflow.schedule`` (controller) -> ``deerflow.execute`` (agent), found by
``deerflow.task.id``. Submit a task on its own to give it a trace of its own.

Why one submit span per job and not a trace per task: a trace per task needs a client span per
task, and an SDK span costs about 110 us of CPU once exported (54 us to make, 55 us to encode,
measured on the 2-core machine), more than a whole no-op task; a bare per-task trace id without
a client span would cut the tasks off from the caller's trace, which is where a DeerFlow
developer looks. Spans go to the tracer provider given to the client, or OpenTelemetry's global
one: with none configured the API is a no-op, no context is sent, and the cost is a few
microseconds per submit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_W3C = TraceContextTextMapPropagator()
"""The wire field is W3C trace context whatever propagators the application configured."""


@contextlib.contextmanager
def submit_span(
    provider: trace.TracerProvider | None, job_id: str, job_name: str
) -> Iterator[tuple[trace.Span, dict[str, str]]]:
    """Run the submit inside a ``deerflow.submit`` span (PRODUCER). Yields the span and the
    context to put on every task (empty when nothing is traced). An exception leaving the block
    is recorded on the span, which then ends with status ERROR."""
    tracer = trace.get_tracer("deerflow_controller.client", tracer_provider=provider)
    attributes = {"deerflow.job.name": job_name} if job_name else {}
    if job_id:
        attributes["deerflow.job.id"] = job_id
    with tracer.start_as_current_span(
        "deerflow.submit", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        if span.get_span_context().is_valid:
            _W3C.inject(carrier)
        yield span, carrier
