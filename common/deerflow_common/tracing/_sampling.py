"""Whether a span that starts here is recorded: the parent's W3C sampled flag, or the SDK's
configured sampler (``OTEL_TRACES_SAMPLER``) asked with the trace id."""

from __future__ import annotations

from typing import Any

from ._context import TraceParent

__all__ = ["Sampling"]


class Sampling:
    """The decision for a span whose parent arrived over the wire (or that has none).

    Parent-based samplers (the default, ``parentbased_always_on``) follow the parent's sampled
    flag at no cost; a span without a parent, or any other sampler, asks the configured SDK
    sampler with the trace id, so ``traceidratio`` agrees across processes."""

    def __init__(self, sampler: Any) -> None:
        from opentelemetry.sdk.trace.sampling import ParentBased

        self._sampler = sampler
        self.follows_parent = isinstance(sampler, ParentBased)

    def sampled(self, trace_id: bytes, parent: TraceParent | None, name: str) -> bool:
        if parent is not None and self.follows_parent:
            return parent.sampled
        result = self._sampler.should_sample(None, int.from_bytes(trace_id, "big"), name)
        return bool(result.decision.is_sampled())
