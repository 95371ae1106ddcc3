"""A real OTLP/gRPC trace receiver on loopback: a test double shipped with the benchmarks, for
tests, the tracing benchmark and a quick look at what the daemons export without installing a
collector.

It runs on the caller's event loop (grpc.aio), keeps each request's bytes as they arrive (no
parsing on the receiving path, so a benchmark measures the exporters, not this) and parses them
when asked. Export calls are answered with success at once. Requests up to 64 MiB are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

T = TypeVar("T")

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a root span."""
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    status_code: int = 0
    status_message: str = ""


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def parse_request(raw: bytes) -> list[ReceivedSpan]:
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
    out = []
    for rs in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        service = str(resource.get("service.name", ""))
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        service=service,
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        kind=int(s.kind),
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        events=tuple(e.name for e in s.events),
                        status_code=int(s.status.code),
                        status_message=s.status.message,
                    )
                )
    return out


class OtlpReceiver:
    """``async with OtlpReceiver() as r: os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] =
    r.endpoint``. Lives on the event loop that enters it: exporters in other threads of the
    same process (the SDK's batch processor) need that loop to keep running, so await, do not
    block it. :meth:`wait_for_spans` wakes on each arrival; it does not poll."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.endpoint = ""
        self._raw: list[bytes] = []
        self._parsed: list[ReceivedSpan] = []
        self._arrived: asyncio.Condition | None = None
        self.requests = 0
        self.bytes = 0
        self._counted = 0
        """How many of the requests in ``_raw`` :meth:`span_count` has counted."""
        self._count = 0

    async def __aenter__(self) -> OtlpReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._arrived = asyncio.Condition()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.so_reuseport", 0),
            ]
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # raw bytes in and out
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler}),)
        )
        self.port = server.add_insecure_port(f"{self._host}:{self._port}")
        self.endpoint = f"http://{self._host}:{self.port}"
        await server.start()
        self._server = server

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._raw.append(request)
        self.requests += 1
        self.bytes += len(request)
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def span_count(self) -> int:
        """How many spans arrived so far (each request is parsed once to count its spans, without
        building :class:`ReceivedSpan` records)."""
        raw = self._raw
        for chunk in raw[self._counted :]:
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(chunk)
            self._count += sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
            )
        self._counted = len(raw)
        return self._count + len(self._parsed)

    async def wait_for_count(self, n: int, timeout_s: float = 30.0) -> int:
        """Wait until at least ``n`` spans arrived in all; return how many did. Raises
        TimeoutError naming how many came."""
        return await self._wait_until(self.span_count, int, n, timeout_s)

    def spans(self) -> list[ReceivedSpan]:
        raw, self._raw = self._raw, []
        self._count, self._counted = 0, 0
        for chunk in raw:
            self._parsed.extend(parse_request(chunk))
        return list(self._parsed)

    def clear(self) -> None:
        self._raw.clear()
        self._parsed.clear()
        self._count, self._counted = 0, 0

    async def wait_for_spans(
        self,
        n: int,
        timeout_s: float = 30.0,
        where: Callable[[ReceivedSpan], bool] | None = None,
    ) -> list[ReceivedSpan]:
        """Wait until at least ``n`` spans (matching ``where``) arrived; return those spans.
        Raises TimeoutError naming how many came."""

        def matching() -> list[ReceivedSpan]:
            return [s for s in self.spans() if where is None or where(s)]

        return await self._wait_until(matching, len, n, timeout_s)

    async def _wait_until(
        self, look: Callable[[], T], size: Callable[[T], int], n: int, timeout_s: float
    ) -> T:
        """Re-``look`` at each arrival until ``size`` of what it returns reaches ``n``."""
        assert self._arrived is not None, "start the receiver first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self._arrived:
            while True:
                got = look()
                if size(got) >= n:
                    return got
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"{size(got)} of {n} spans arrived in {timeout_s:g} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)


READY_PREFIX = "otlp receiver listening on "


async def _serve_until_stdin_closes() -> None:
    """Serve on a free port and print the ready line. Then, for each line ``wait N`` on stdin,
    wait until N spans arrived in all (at most 60 s) and print what arrived as one JSON line
    ({"spans": n, "requests": n, "bytes": n}); at the end of stdin print that line once more
    and stop."""
    import json
    import sys

    loop = asyncio.get_running_loop()

    def report() -> None:
        counts = {"spans": receiver.span_count(), "requests": receiver.requests}
        print(json.dumps({**counts, "bytes": receiver.bytes}), flush=True)

    async with OtlpReceiver() as receiver:
        print(f"{READY_PREFIX}{receiver.endpoint}", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            words = line.split()
            if len(words) == 2 and words[0] == "wait" and words[1].isdigit():
                with contextlib.suppress(TimeoutError):
                    await receiver.wait_for_count(int(words[1]), 60.0)
                report()
        report()


def main() -> None:
    """Run a receiver until stdin closes (used by the tracing benchmark)."""
    asyncio.run(_serve_until_stdin_closes())
