"""The numbers an agent sends, checked at the edge (issue #17 finding 3): every float finite and
not negative, every count not negative, so no NaN or infinity an agent reports reaches placement,
the predictor, the rate limiter or ``/api/stats`` (where one made the JSON answer 500). A message
that breaks this ends the agent's stream with INVALID_ARGUMENT naming the field (agent.proto);
the core still clamps load figures itself (``core.trust``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from deerflow_controller.core.validation import quote
from deerflow_protos import agent_pb2

__all__ = ["hello_problem", "message_problem"]

_INF = math.inf


def _bad(value: float, field: str, *, negative_ok: bool = False) -> str | None:
    if math.isfinite(value) and (negative_ok or value >= 0):
        return None
    need = "finite" if negative_ok else "finite and not negative"
    return f"{field} is {value!r}; it must be {need}"


def _first(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p is not None), None)


def hello_problem(hello: agent_pb2.Hello) -> str | None:
    """What is wrong with the numbers of a Hello (its handlers' traits), or None."""
    for h in hello.handlers:
        where = f"Hello's handler {quote(h.name, 64)}"
        problem = _first(
            _bad(value, f"{where} {name}")
            for name, value in (
                ("similarity_threshold", h.similarity_threshold),
                ("cache_ttl_s", h.cache_ttl_s),
                ("default_duration_s", h.default_duration_s),
                ("default_cpu_s", h.default_cpu_s),
            )
        )
        if problem is None and not 0 <= h.similarity_threshold <= 1:
            problem = f"{where} similarity_threshold is {h.similarity_threshold!r}; it must be 0-1"
        if problem is not None:
            return problem
    return None


def message_problem(msg: agent_pb2.AgentMessage, kind: str | None) -> str | None:
    """What is wrong with the numbers of one message on an agent's stream (``kind`` is its
    ``msg`` oneof), or None."""
    if kind == "heartbeat":
        hb = msg.heartbeat
        return _first(
            (
                _bad(hb.cpu_percent, "Heartbeat cpu_percent"),
                _bad(hb.memory_percent, "Heartbeat memory_percent"),
                _bad(hb.process_cpu_percent, "Heartbeat process_cpu_percent"),
                _bad(hb.running, "Heartbeat running"),
                _bad(hb.free_slots, "Heartbeat free_slots"),
                _bad(hb.queued, "Heartbeat queued"),
                *(
                    _bad(v, f"Heartbeat handler_latency_s[{quote(k, 64)}]")
                    for k, v in hb.handler_latency_s.items()
                ),
            )
        )
    if kind == "results":
        # Nearly every batch is in order: one comparison chain per number (false for NaN,
        # infinities and negatives) finds that without a call per field; the sentence is
        # made only for a batch that fails it.
        for r in msg.results.results:
            if not (
                0.0 <= r.started_at < _INF and 0.0 <= r.finished_at < _INF and 0.0 <= r.cpu_s < _INF
            ):
                break
        else:
            return None
        return _first(
            _bad(value, f"Result {name}")
            for r in msg.results.results
            for name, value in (
                ("started_at", r.started_at),
                ("finished_at", r.finished_at),
                ("cpu_s", r.cpu_s),
            )
        )
    if kind == "started":
        return _first(_bad(s.time, "Started time") for s in msg.started.started)
    if kind == "progress":
        return _first(
            _bad(p.fraction, "Progress fraction", negative_ok=True) for p in msg.progress.progress
        )
    return None
