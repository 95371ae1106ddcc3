"""AgentService: the controller's side of each agent's long-lived stream (see agent.proto)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from deerflow_controller.core.validation import (
    MAX_HANDLERS_PER_AGENT,
    MAX_LABELS,
    count_problem,
    name_problem,
    quote,
)
from deerflow_controller.service import agent_numbers, wire
from deerflow_controller.service.inputs import hash_for_readers, input_chunks
from deerflow_controller.service.shell import AgentSession, Shell
from deerflow_protos import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0


class AgentService(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> None:
        hello = await self._read_hello(request_iterator, context)
        shell = self.shell
        if hello.max_epoch_seen > shell.config.epoch:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"agent {quote(hello.agent_id)} has seen epoch {hello.max_epoch_seen}, newer than "
                f"this controller's epoch {shell.config.epoch}: this controller is no longer "
                "the leader; connect to the current one",
            )
        agent_id = hello.agent_id
        taken = shell.takeover_refusal(agent_id, hello.instance)
        if taken is not None:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, taken)
        traits = {h.name: wire.traits_from_proto(h) for h in hello.handlers}
        conflict = shell.trait_conflict(traits)
        if conflict is not None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"agent {quote(agent_id)}: {conflict}"
            )
        # Nothing awaited between the checks and the session: they hold when it opens.
        session = shell.open_session(agent_id, hello.instance)
        reader: asyncio.Task[None] | None = None
        try:
            await context.write(
                agent_pb2.ControllerMessage(
                    welcome=agent_pb2.Welcome(
                        epoch=shell.config.epoch,
                        heartbeat_interval_s=shell.config.heartbeat_interval_s,
                        prefetch=session.scheduler.prefetch_for(hello.slots),
                        controller_id=shell.config.controller_id,
                    )
                )
            )
            await shell.agent_joined(
                session,
                [h.name for h in hello.handlers],
                hello.slots,
                labels=dict(hello.labels),
                running=[wire.key_from_ref(r) for r in hello.running],
                handler_slots={h.name: h.slots for h in hello.handlers},
                traits=traits,
            )
            log.info(
                "agent %s joined: %d slots, handlers %s",
                agent_id,
                hello.slots,
                ", ".join(sorted(h.name for h in hello.handlers)),
            )
            reader = asyncio.get_running_loop().create_task(
                self._read_loop(session, request_iterator)
            )
            await self._write_loop(session, context)
            if session.refusal:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, session.refusal)
        finally:
            # From the moment the session exists: a stream that broke while its Welcome was
            # written, or whose Hello the scheduler refused, must not stay listed as connected.
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if await shell.close_session(session):
                log.info("agent %s left", agent_id)

    async def _read_hello(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> agent_pb2.Hello:
        try:
            first = await asyncio.wait_for(anext(request_iterator), HELLO_TIMEOUT_S)
        except (StopAsyncIteration, TimeoutError):
            # The stream also ends at a message that does not parse (service.malformed), which
            # leaves its own sentence in the context.
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                context.details()
                or f"send Hello as the first message within {HELLO_TIMEOUT_S:g} s",
            )
            raise  # unreachable: abort raises
        if first.WhichOneof("msg") != "hello":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message on the stream must be Hello"
            )
        hello: agent_pb2.Hello = first.hello
        problem = None
        if not hello.agent_id:
            problem = "Hello has no agent_id; give the agent a unique id (--id)"
        elif hello.slots <= 0:
            problem = f"agent {quote(hello.agent_id)} offers {hello.slots} slots; offer at least 1"
        elif not hello.handlers:
            problem = f"agent {quote(hello.agent_id)} offers no handlers; install at least one"
        else:
            problem = _hello_names_problem(hello) or agent_numbers.hello_problem(hello)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        return hello

    async def _read_loop(
        self, session: AgentSession, request_iterator: AsyncIterator[agent_pb2.AgentMessage]
    ) -> None:
        shell = self.shell
        agent_id = session.agent_id
        inline = shell.config.inline_input_bytes
        try:
            async for msg in request_iterator:
                if session.closed:
                    return
                kind = msg.WhichOneof("msg")
                refusal = agent_numbers.message_problem(msg, kind)
                if refusal is not None:
                    session.refusal = f"agent {quote(agent_id)}: {refusal}; stream closed"
                    return
                if kind == "results":
                    results = wire.results_from_proto(msg.results)
                    if any(len(r.output) > inline for r in results):
                        await hash_for_readers(results, shell.job, inline)
                    shell.results(session, results)
                elif kind == "started":
                    shell.started(session, [wire.key_from_ref(s.ref) for s in msg.started.started])
                elif kind == "heartbeat":
                    hb = msg.heartbeat
                    shell.heartbeat(
                        session,
                        hb.running,
                        hb.cpu_percent,
                        hb.memory_percent,
                        process_cpu_percent=hb.process_cpu_percent,
                    )
                elif kind == "progress":
                    shell.progress(session, wire.progress_reports(msg.progress))
                elif kind == "draining":
                    refs = [wire.key_from_ref(r) for r in msg.draining.not_started]
                    shell.agent_draining(session, refs)
                    log.info("agent %s is draining; %d attempts given back", agent_id, len(refs))
                else:
                    log.warning("agent %s sent an unexpected %s message; ignored", agent_id, kind)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("stream of agent %s failed", agent_id)
        finally:
            session.close()

    async def FetchInput(
        self, request: agent_pb2.FetchInputRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.InputChunk]:
        """The bytes of an input sent by reference, in chunks (see agent.proto)."""
        ref = request.ref
        if not self.shell.may_fetch(request.agent_id, request.instance):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"agent {quote(request.agent_id)} is not connected here with that instance; "
                "FetchInput must name the connected agent holding the attempt and its Hello's "
                "instance",
            )
            return
        job = self.shell.job(ref.job_id)
        found = (
            input_chunks(
                job,
                ref.task_id,
                ref.attempt,
                request.task_id,
                request.offset,
                holder=request.agent_id,
            )
            if job is not None
            else f"no job {quote(ref.job_id)} here (it ended, or another controller leads now)"
        )
        if isinstance(found, str):
            await context.abort(grpc.StatusCode.NOT_FOUND, found)
            return
        for chunk in found:
            yield agent_pb2.InputChunk(data=chunk)

    @staticmethod
    async def _write_loop(session: AgentSession, context: grpc.aio.ServicerContext) -> None:
        outbound = session.outbound
        while True:
            await session.wake.wait()
            session.wake.clear()
            while outbound:
                await context.write(outbound.popleft())
            if session.closed:
                return


def _hello_names_problem(hello: agent_pb2.Hello) -> str | None:
    """The agent id, handler names and labels of a Hello: bounded in number (the handler_slots
    and traits go one per handler), each a bounded, printable name (the same bounds as a
    task's, so that every handler a task can name fits)."""
    problem = name_problem(hello.agent_id, "agent id")
    if problem is not None:
        return f"Hello's {problem}"
    for problem in (
        count_problem(len(hello.handlers), "handlers", MAX_HANDLERS_PER_AGENT),
        count_problem(len(hello.labels), "labels", MAX_LABELS),
    ):
        if problem is not None:
            return f"agent {quote(hello.agent_id)} declares {problem}; declare fewer"
    fields = [("handler name", h.name) for h in hello.handlers]
    for key, value in hello.labels.items():
        fields += [("label key", key), (f"value of label {quote(key, 32)}", value)]
    for field, value in fields:
        problem = name_problem(value, field)
        if problem is not None:
            return f"agent {quote(hello.agent_id)}: {problem}"
    return None
