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
        from opentelemetry.sdk.trace.sampling import (
            ALWAYS_OFF,
            ALWAYS_ON,
            DEFAULT_OFF,
            DEFAULT_ON,
            ParentBased,
        )

        self._sampler = sampler
        self.follows_parent = isinstance(sampler, ParentBased)
        # The SDK's own instances for always_on / always_off and their parent-based forms
        # (what OTEL_TRACES_SAMPLER names): their answer for a span without a parent is fixed,
        # so it is not asked for each one (1.4 us a call: a controller tracing the tasks of a
        # client that sends no context starts a trace for every task).
        self._root: bool | None = (
            True
            if sampler is ALWAYS_ON or sampler is DEFAULT_ON
            else False
            if sampler is ALWAYS_OFF or sampler is DEFAULT_OFF
            else None
        )

    def sampled(self, trace_id: bytes, parent: TraceParent | None, name: str) -> bool:
        if parent is not None:
            if self.follows_parent:
                return parent.sampled
        elif self._root is not None:
            return self._root
        result = self._sampler.should_sample(None, int.from_bytes(trace_id, "big"), name)
        return bool(result.decision.is_sampled())
