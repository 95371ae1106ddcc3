"""The controller's per-task Python in one process, without gRPC or sockets, for instruction
counts (callgrind) where the 2-core VM's clock is too noisy (docs/BENCHMARKS.md, issue #19
item 3, session 8).

It runs what a no-op job costs the controller: the SubmitJobRequest parsed, converted and
validated as JobService does, the shell's flushes (core, event tap, metrics, and with ``on`` the
tracer exporting to a null exporter), every assignment message serialized and parsed, a
stand-in agent answering each with a ResultBatch that is serialized, parsed, checked and fed
back as AgentService does, and the job's events built into WatchJob messages. The stand-in
agent's message building is included (a few percent).

    python tools/controller_per_task.py TASKS JOBS on|off
    # instructions per task: run with JOBS and with 0 under callgrind, subtract, divide:
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python tools/controller_per_task.py 5000 2 on
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from deerflow_common import tracing
from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.validation import Limits, validate_job
from deerflow_controller.observability import Observability
from deerflow_controller.service import agent_numbers, wire
from deerflow_controller.service.job_service import JobService
from deerflow_controller.service.shell import AgentSession, Shell
from deerflow_protos import agent_pb2, client_pb2

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class NullExporter:
    """An SDK span exporter that accepts every batch."""

    def export(self, batch: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def answer(session: AgentSession, shell: Shell) -> None:
    """The stand-in agent: every assignment succeeds with its payload as output."""
    while session.outbound:
        wire_msg = session.outbound.popleft().SerializeToString()
        m = agent_pb2.ControllerMessage.FromString(wire_msg)
        if m.WhichOneof("msg") != "assignments":
            continue
        out = agent_pb2.AgentMessage()
        add = out.results.results.add
        for a in m.assignments.assignments:
            r = add(ok=True, output=a.payload, started_at=1e9, finished_at=1e9 + 1e-5)
            r.ref.CopyFrom(a.ref)
        msg = agent_pb2.AgentMessage.FromString(out.SerializeToString())
        if agent_numbers.message_problem(msg, msg.WhichOneof("msg")) is not None:
            raise RuntimeError("the stand-in agent's numbers were refused")
        shell.results(session, wire.results_from_proto(msg.results))


async def main(tasks: int, jobs: int, traced: bool) -> None:
    shell = Shell(ControllerConfig())
    sink = None
    if traced:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
        os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(3 * tasks)
        os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "4096"
        sink = tracing.tracing_from_env("deerflow-controller", "bench", install_sdk=False)
        assert sink is not None
        sink.exporter = NullExporter()
    Observability(shell, sink).enable_metrics()
    shell.start()
    sessions = []
    for agent_id in ("agent-1", "agent-2"):
        s = shell.open_session(agent_id, "instance")
        await shell.agent_joined(
            s, ["echo"], 64, labels={}, running=[], handler_slots={}, traits={}
        )
        sessions.append(s)
    cfg = shell.config
    limits = Limits(cfg.max_payload_bytes, cfg.max_tasks_per_job, cfg.scheduler.max_retries)
    started = time.process_time()
    for j in range(jobs):
        req = client_pb2.SubmitJobRequest(job_id=f"job{j}", name="noop")
        add = req.tasks.add
        for i in range(tasks):
            add(id=f"t{i}", handler="echo", payload=f"{i:08d}".encode())
        if traced:
            req.trace_context["traceparent"] = TRACEPARENT
        req = client_pb2.SubmitJobRequest.FromString(req.SerializeToString())
        job_tc = wire.job_trace_context(req)
        specs = wire.specs_from_request(req, job_tc)
        validate_job(specs, limits, job_id=req.job_id, name=req.name, trace_context=job_tc)
        shell.submit_job(req.job_id, req.name, specs)
        job = shell.job(req.job_id)
        assert job is not None
        cursor = 0
        await asyncio.sleep(0)
        while True:
            for s in sessions:
                answer(s, shell)
            await asyncio.sleep(0)
            events = job.events
            while cursor < len(events):
                batch, cursor, _ = JobService._batch(events, cursor, False, 1 << 20, len(events))
                batch.SerializeToString()
            if job.done and cursor == len(job.events):
                break
        if sink is not None:
            await sink.flush()
    cpu = time.process_time() - started
    print(f"{jobs} x {tasks} traced={traced}: {cpu / max(1, jobs * tasks) * 1e6:.2f} us/task CPU")
    await shell.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "on"))
