"""One DeerFlow "server process" of a baseline: ``python -m deerflow_bench._baseline_process
CONFIG OUT`` runs the jobs a load balancer sent it, each at its arrival time, with the process's
own executor state (the fork's limiter and search cache, or DeerFlow 2.0's pools, middleware
and breaker), and writes what every job met to OUT as JSON.

CONFIG (JSON): ``system`` ("fork" | "deerflow2"), ``t0`` (the run's start, epoch seconds, the
same for every process), ``scale``, ``providers`` (base_url and keys), ``jobs``
(``_research_workload`` JSON), ``llm_cap`` (DeerFlow 2.0's ``max_concurrent_calls``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from . import _baseline_deerflow2 as df2
from . import _baseline_fork as fork
from ._baseline_http import JobRecord, ProviderError, Providers, RealClock, SlotLedger, request
from ._research_workload import Call, Job, Step, jobs_from_json


@dataclass
class StepTally:
    """What one attempt of a step met; merged into the job's record when the attempt ends."""

    busy_s: float = 0.0
    tool_errors: int = 0
    no_content: int = 0
    cacheable: int = 0
    cache_hits: int = 0
    calls: int = 0

    def merge_into(self, rec: JobRecord, *, counts: bool = True) -> None:
        rec.busy_s += self.busy_s
        if counts:
            rec.tool_errors += self.tool_errors
            rec.no_content += self.no_content
            rec.cacheable += self.cacheable
            rec.cache_hits += self.cache_hits
            rec.calls += self.calls


async def _timed(tally: StepTally, attempt: Awaitable[bytes]) -> bytes:
    started = time.monotonic()
    try:
        return await attempt
    finally:
        tally.busy_s += time.monotonic() - started


async def _tool(
    session: aiohttp.ClientSession,
    providers: Providers,
    call: Call,
    tally: StepTally,
    *,
    cache: fork.SearchCache | None,
    timeout_s: float = 0.0,
) -> None:
    """One search or crawl as a DeerFlow tool: an error becomes text for the model."""
    tally.cacheable += 1
    if cache is not None and call.kind == "search" and cache.get(call.payload["query"]):
        tally.cache_hits += 1
        return
    try:
        answer = await request(session, providers, call, timeout_s=timeout_s)
    except ProviderError as e:
        if e.no_content:
            tally.no_content += 1
        else:
            tally.tool_errors += 1
        return
    tally.calls += 1
    if cache is not None and call.kind == "search":
        cache.put(call.payload["query"], answer)


async def _tools(
    session: aiohttp.ClientSession,
    providers: Providers,
    calls: tuple[Call, ...],
    tally: StepTally,
    *,
    cache: fork.SearchCache | None,
    fetch_timeout_s: float = 0.0,
) -> None:
    """A turn's tool calls, run together (LangGraph's ToolNode); busy while any is in flight."""
    if not calls:
        return
    started = time.monotonic()
    await asyncio.gather(
        *(
            _tool(
                session,
                providers,
                c,
                tally,
                cache=cache,
                timeout_s=fetch_timeout_s if c.kind == "crawl" else 0.0,
            )
            for c in calls
        )
    )
    tally.busy_s += time.monotonic() - started


# ------------------------------------------------------------------ the fork


class ForkProcess:
    def __init__(self, providers: Providers, scale: float) -> None:
        self.providers, self.scale = providers, scale
        self.clock = RealClock()
        self.limiter = fork.ForkRateLimiter(self.clock, scale=scale)
        self.cache = fork.SearchCache()
        self.ledger = SlotLedger()
        self.max_width_seen = 0

    async def llm(self, session: aiohttp.ClientSession, call: Call, tally: StepTally) -> bytes:
        async def attempt() -> bytes:
            return await _timed(tally, request(session, self.providers, call))

        answer = await fork.safe_llm_call(attempt, clock=self.clock, scale=self.scale)
        tally.calls += 1
        return answer

    async def run_job(self, session: aiohttp.ClientSession, job: Job, rec: JobRecord) -> None:
        lead = StepTally()
        try:
            await self.llm(session, job.coordinator, lead)
            await self.llm(session, job.planner, lead)
        except ProviderError:
            rec.failed = True
            return
        finally:
            lead.busy_s = 0.0  # the lead's calls hold no executor slot
            lead.merge_into(rec)
        width = 0

        def on_width(new: int) -> None:
            nonlocal width
            self.ledger.add(new - width)
            width = new

        executor = fork.ParallelExecutor(
            self.limiter, 3, clock=self.clock, scale=self.scale, on_width=on_width
        )
        executor.add_tasks(
            [
                fork.ParallelTask(f"{job.id}/{step.title}", self._step_fn(session, step, rec))
                for step in job.steps
            ]
        )
        results = await executor.execute_all()
        self.max_width_seen = max(self.max_width_seen, executor.max_running_seen)
        rec.failed_steps = sum(r.status != "completed" for r in results.values())
        tail = StepTally()
        try:
            await self.llm(session, job.reporter, tail)
        except ProviderError:
            rec.failed = True
        tail.busy_s = 0.0  # outside the executor too
        tail.merge_into(rec)

    def _step_fn(
        self, session: aiohttp.ClientSession, step: Step, rec: JobRecord
    ) -> Callable[[], Awaitable[None]]:
        """A plan step as the fork runs it: ``safe_llm_call_async(agent.ainvoke)`` around the
        whole ReAct loop, so a retryable llm error restarts the step's agent after 1, 2, 4 s
        (and a step that still fails is retried by the executor)."""

        async def agent_invoke() -> bytes:
            tally = StepTally()
            try:
                for turn in step.turns:
                    await _timed(tally, request(session, self.providers, turn.llm))
                    tally.calls += 1
                    await _tools(session, self.providers, turn.tools, tally, cache=self.cache)
            except BaseException:
                tally.merge_into(rec, counts=False)
                raise
            tally.merge_into(rec)
            return b""

        async def run() -> None:
            await fork.safe_llm_call(agent_invoke, clock=self.clock, scale=self.scale)

        return run


# ------------------------------------------------------------------ DeerFlow 2.0


class DeerFlow2Process:
    def __init__(self, providers: Providers, scale: float, llm_cap: int) -> None:
        self.providers, self.scale = providers, scale
        self.middleware = df2.LlmMiddleware(scale=scale, max_concurrent_calls=llm_cap)
        self.pools = df2.SubagentPools(timeout_s=df2.SUBAGENT_TIMEOUT_S * scale)

    async def llm(self, session: aiohttp.ClientSession, call: Call, tally: StepTally) -> bytes:
        async def attempt() -> bytes:
            return await _timed(tally, request(session, self.providers, call))

        answer = await self.middleware.call(attempt)
        tally.calls += 1
        return answer

    async def run_job(self, session: aiohttp.ClientSession, job: Job, rec: JobRecord) -> None:
        lead = StepTally()
        try:
            await self.llm(session, job.coordinator, lead)
            await self.llm(session, job.planner, lead)
        except (ProviderError, df2.CircuitOpen):
            rec.failed = True
            return
        finally:
            lead.busy_s = 0.0  # the lead agent runs outside the sub-agent pools
            lead.merge_into(rec)
        futures = [self.pools.submit(self._subagent(step)) for step in job.steps]
        outcomes = await asyncio.gather(
            *(asyncio.wrap_future(f) for f in futures), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                rec.failed_steps += 1  # timed out in the pools
                continue
            tally, ok = outcome
            tally.merge_into(rec)
            rec.failed_steps += not ok
        tail = StepTally()
        try:
            await self.llm(session, job.reporter, tail)
        except (ProviderError, df2.CircuitOpen):
            rec.failed = True
        tail.busy_s = 0.0
        tail.merge_into(rec)

    def _subagent(self, step: Step) -> Callable[[], Awaitable[tuple[StepTally, bool]]]:
        async def run() -> tuple[StepTally, bool]:
            tally = StepTally()
            async with aiohttp.ClientSession() as session:
                for turn in step.turns:
                    try:
                        await self.llm(session, turn.llm, tally)
                    except (ProviderError, df2.CircuitOpen):
                        return tally, False  # the fallback message ends the sub-agent
                    await _tools(
                        session,
                        self.providers,
                        turn.tools,
                        tally,
                        cache=None,
                        fetch_timeout_s=df2.WEB_FETCH_TIMEOUT_S * self.scale,
                    )
            return tally, True

        return run


# ------------------------------------------------------------------ the process


async def serve(config: dict[str, Any]) -> dict[str, Any]:
    providers = Providers(**config["providers"])
    scale = float(config["scale"])
    jobs = jobs_from_json(config["jobs"])
    t0 = float(config["t0"])
    system: ForkProcess | DeerFlow2Process
    if config["system"] == "fork":
        system = ForkProcess(providers, scale)
    else:
        system = DeerFlow2Process(providers, scale, int(config.get("llm_cap", 0)))
    records = [JobRecord(j.id, t0 + j.arrival_s) for j in jobs]
    deadline = t0 + float(config["deadline_s"])
    connector = aiohttp.TCPConnector(limit=0)
    # CPU from here, as the control plane's is counted from its cluster being up: the
    # interpreter's start and imports are no more the baseline's work than the daemons' are ours.
    cpu_start = time.process_time()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(job: Job, rec: JobRecord) -> None:
            await asyncio.sleep(max(0.0, rec.arrival - time.time()))
            try:
                await asyncio.wait_for(system.run_job(session, job, rec), deadline - time.time())
            except TimeoutError:
                rec.failed = True
            rec.end = time.time()

        await asyncio.gather(*(one(j, r) for j, r in zip(jobs, records, strict=True)))
    out: dict[str, Any] = {
        "records": [r.to_json() for r in records],
        "cpu_s": time.process_time() - cpu_start,
    }
    if isinstance(system, ForkProcess):
        # The executors' width over their lives; DeerFlow 2.0's pools are counted by the
        # parent (their width over the whole run).
        out["slot_s"] = system.ledger.close()
        out["limiter_wait_s"] = system.limiter.waited_s
        out["max_running_seen"] = system.max_width_seen
    else:
        out["llm_retries"] = system.middleware.retries
        out["max_running_seen"] = system.pools.max_running_seen
        system.pools.shutdown()
    return out


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(serve(config))
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
