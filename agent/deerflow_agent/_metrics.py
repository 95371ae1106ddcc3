"""The agent's Prometheus metrics (see ``_telemetry`` for the series): counted per attempt,
rendered on each scrape."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil

from deerflow_common import signals, tracing
from deerflow_common.prometheus import Histogram, MetricsText, process_metrics

from ._attempt import Outcome, outcome_label

if TYPE_CHECKING:
    from ._session import Agent

__all__ = ["AttemptMetrics"]


class AttemptMetrics:
    """Counts of ended attempts: run time per handler, outcomes, provider statuses."""

    def __init__(self) -> None:
        self.run: dict[str, Histogram] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.provider_responses: dict[tuple[str, str], int] = {}

    def count(self, outcome: Outcome) -> None:
        """Count one ended attempt (on the loop, per attempt: a few dict updates)."""
        handler = outcome.handler
        hist = self.run.get(handler)
        if hist is None:
            hist = self.run[handler] = Histogram()
        hist.observe(max(0.0, outcome.finished_at - outcome.started_at))
        key = (handler, outcome_label(outcome))
        self.attempts[key] = self.attempts.get(key, 0) + 1
        status = outcome.metadata.get(signals.HTTP_STATUS) if outcome.metadata else None
        if status:
            skey = (handler, status)
            self.provider_responses[skey] = self.provider_responses.get(skey, 0) + 1

    def render(self, agent_id: str, agent: Agent | None, sink: tracing.SpanSink | None) -> str:
        """The Prometheus text exposition of ``agent`` (None before it exists)."""
        out = MetricsText()
        labels = {"agent": agent_id}
        if agent is not None:
            rt = agent.runtime
            out.gauge("deerflow_agent_slots", "Slots this agent offers.", [(labels, rt.slots)])
            out.gauge("deerflow_agent_running", "Slots taken by attempts.", [(labels, rt.running)])
            out.gauge(
                "deerflow_agent_queued", "Attempts received, not started.", [(labels, rt.queued)]
            )
            out.gauge(
                "deerflow_agent_connected",
                "1 while a stream to a controller is open.",
                [(labels, float(agent.connected))],
            )
            out.gauge(
                "deerflow_agent_draining", "1 while draining.", [(labels, float(agent.draining))]
            )
            out.gauge(
                "deerflow_agent_handler_slots",
                "Concurrent attempts allowed per handler.",
                [({**labels, "handler": h}, n) for h, n in sorted(rt.slot_caps().items())],
            )
            out.gauge(
                "deerflow_agent_handler_latency_seconds",
                "Recent mean run time per handler (what heartbeats report).",
                [({**labels, "handler": h}, v) for h, v in sorted(rt.latencies().items())],
            )
        out.counter(
            "deerflow_agent_attempts_total",
            "Attempts that ended, by handler and outcome.",
            [
                ({**labels, "handler": h, "outcome": o}, n)
                for (h, o), n in sorted(self.attempts.items())
            ],
        )
        out.counter(
            "deerflow_agent_provider_responses_total",
            "Provider HTTP statuses handlers reported (429 = rate-limited), by handler.",
            [
                ({**labels, "handler": h, "status": s}, n)
                for (h, s), n in sorted(self.provider_responses.items())
            ],
        )
        out.histogram(
            "deerflow_agent_run_seconds",
            "Handler run time per attempt, per handler.",
            "handler",
            self.run,
        )
        out.gauge(
            "deerflow_agent_memory_percent",
            "Machine memory in use.",
            [(labels, float(psutil.virtual_memory().percent))],
        )
        if sink is not None:
            out.counter(
                "deerflow_tracing_spans_exported_total",
                "Spans exported.",
                [(None, sink.exported)],
            )
            out.counter(
                "deerflow_tracing_spans_dropped_total",
                "Spans dropped because the export queue was full.",
                [(None, sink.dropped)],
            )
        process_metrics(out)
        return out.render()
