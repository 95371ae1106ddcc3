"""`deerflow bench ratelimit --scenario ...`: the cluster-wide limiter against the provider
simulator, with real controller, agent and simulator processes on loopback.

Scenarios (docs/WORKLOAD.md):
- ``overload``: LLM tasks offered far above a key's limit all at once. Ideal: the quota bound,
  tasks / (rpm / 60) seconds.
- ``ramp``: offered load rises from 0 to peak in 10 s, then holds, against an Ark-style
  burst-slope limit. Ideal: the offered schedule's length.
- ``multinode``: four agents; the cluster-wide limiter against per-agent concurrency caps (how
  DeerFlow 2.0 limits LLM calls, per process), side by side.
- ``unknown``: no limit configured: the limiter must find the provider's. Reports the time until
  the served rate first reaches 90 % of the true limit.

Every result adds ``requests`` (all requests the simulator saw for the key), ``throttled``
(429s) and ``throttled_share`` to the common benchmark fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster, SimulatorProcess
from ._throughput import RssSampler, machine

API_KEY = "sim-key"
MODEL = "sim-model"
RATE_KEY = f"llm/{API_KEY}/{MODEL}"
MAX_TOKENS = 64
EST_TOKENS = 90.0


def llm_task(i: int, *, rate_limited: bool, max_retries: int) -> Task:
    return Task(
        f"llm-{i}",
        "llm",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Summarise finding {i} in one line."}],
            "max_tokens": MAX_TOKENS,
        },
        max_retries=max_retries,
        timeout_s=60,
        rate_keys=(RATE_KEY,) if rate_limited else (),
        est_tokens=EST_TOKENS,
    )


def search_task(i: int, *, max_retries: int) -> Task:
    """A Tavily-like search: its provider states no limits and sends no Retry-After."""
    return Task(
        f"search-{i}",
        "search",
        {"query": f"delivery market share city {i}", "max_results": 5},
        max_retries=max_retries,
        timeout_s=60,
        rate_keys=(f"search/{API_KEY}",),
    )


def limits_toml(rpm: float | None, slope: float | None) -> str:
    lines = ["[[ratelimit.keys]]", f'pattern = "llm/{API_KEY}/*"']
    if rpm is not None:
        lines.append(f"rpm = {rpm}")
    if slope is not None:
        lines += [f"burst_slope = {slope}", "burst_floor_rps = 2.0"]
    return "\n".join(lines) + "\n"


async def sim_key_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/stats") as resp:
        data: dict[str, Any] = await resp.json()
    keys: dict[str, Any] = data.get("keys", {})
    return dict(keys.get(API_KEY, {}))


@dataclass
class Bench:
    sim: SimulatorProcess
    client: AsyncClient
    rss: RssSampler

    async def provider_stats(self) -> dict[str, Any]:
        return await sim_key_stats(self.sim.url)

    async def finish(self) -> tuple[dict[str, Any], float]:
        """What the simulator saw for the key, and the controller's peak RSS in MiB (sampling
        stops)."""
        return await self.provider_stats(), await self.rss.stop()


@contextlib.asynccontextmanager
async def environment(
    sim_rpm: float,
    slope: float | None,
    agents: int,
    slots: int,
    time_scale: float,
    *,
    limited: bool = True,
    agent_args: tuple[str, ...] = (),
) -> AsyncIterator[Bench]:
    """The simulator, a cluster whose agents call it, a client that waited for every agent,
    and the controller's RSS being sampled; all stopped on exit. ``limited``: the controller
    is told the key's limits (``limits_toml``); otherwise it must find them."""
    key_spec = f"{API_KEY}=rpm:{sim_rpm:g},tpm:1000000000,concurrency:100000"
    if slope is not None:
        key_spec += f",slope:{slope:g}"
    sim = await SimulatorProcess.start(["--time-scale", str(time_scale), "--key", key_spec])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            controller_args: list[str] = []
            if limited:
                path = Path(tmp) / "limits.toml"
                path.write_text(limits_toml(sim_rpm, slope))
                controller_args = ["--limits", str(path)]
            cluster = Cluster(
                agents,
                agent_args=["--slots", str(slots), *agent_args],
                controller_args=controller_args,
                agent_env={
                    "DEERFLOW_LLM_BASE_URL": sim.url,
                    "DEERFLOW_LLM_API_KEY": API_KEY,
                    "DEERFLOW_SEARCH_BASE_URL": sim.url,
                    "DEERFLOW_SEARCH_API_KEY": API_KEY,
                },
            )
            async with cluster, AsyncClient(cluster.address, timeout_s=60) as client:
                await client.agents(wait_for=agents, timeout_s=30)
                assert cluster.controller is not None
                rss = RssSampler(cluster.controller.pid)
                rss.start()
                try:
                    yield Bench(sim, client, rss)
                finally:
                    await rss.stop()
    finally:
        await sim.stop()


async def _run_job(client: AsyncClient, tasks: list[Task]) -> tuple[float, int, int]:
    started = time.perf_counter()
    job = await client.submit(tasks, name="bench-ratelimit")
    ok = failed = 0
    async for r in job.results():
        ok += r.ok
        failed += not r.ok
    return time.perf_counter() - started, ok, failed


def _shape(
    scenario: str, n: int, seconds: float, ideal: float, rss_mb: float, sim: dict[str, Any]
) -> dict[str, Any]:
    served = int(sim.get("served", 0))
    throttled = int(sim.get("throttled", 0))
    failed = int(sim.get("failed", 0))
    requests = served + throttled + failed + int(sim.get("unauthorized", 0))
    return {
        "workload": f"ratelimit-{scenario}",
        "tasks": n,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(n / seconds, 1),
        "ideal_s": round(ideal, 3),
        "ratio_to_ideal": round(seconds / ideal, 4),
        "controller_rss_mb": round(rss_mb, 1),
        "requests": requests,
        "throttled": throttled,
        "throttled_share": round(throttled / requests, 5) if requests else 0.0,
    }


async def overload(
    tasks: int, rpm: float, agents: int, slots: int, time_scale: float
) -> dict[str, Any]:
    work = [llm_task(i, rate_limited=True, max_retries=5) for i in range(tasks)]
    async with environment(rpm, None, agents, slots, time_scale) as env:
        seconds, ok, failed = await _run_job(env.client, work)
        stats, rss_mb = await env.finish()
    out = _shape("overload", tasks, seconds, tasks / (rpm / 60), rss_mb, stats)
    out.update(succeeded=ok, failed=failed, rpm=rpm, ideal_basis="tasks / (rpm / 60)")
    return out


async def ramp(
    peak_rps: float, ramp_s: float, hold_s: float, slope: float, agents: int, slots: int,
    time_scale: float,
) -> dict[str, Any]:  # fmt: skip
    """Offer load rising linearly to ``peak_rps`` over ``ramp_s``, then holding; each 100 ms
    wave is one job. The key's RPM is far above the peak: only the slope limit binds."""
    rpm = peak_rps * 60 * 4
    tick = 0.1
    waves: list[int] = []
    carry = 0.0
    for i in range(int((ramp_s + hold_s) / tick)):
        t = i * tick
        carry += min(peak_rps, peak_rps * t / ramp_s) * tick
        waves.append(int(carry))
        carry -= int(carry)
    total = sum(waves)
    async with environment(rpm, slope, agents, slots, time_scale) as env:
        client = env.client
        started = time.perf_counter()
        jobs = []
        n = 0
        for i, count in enumerate(waves):
            delay = started + i * tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if count:
                batch = [llm_task(n + k, rate_limited=True, max_retries=5) for k in range(count)]
                n += count
                jobs.append(await client.submit(batch))
        ok = failed = 0
        for job in jobs:
            for r in (await job.wait()).values():
                ok += r.ok
                failed += not r.ok
        seconds = time.perf_counter() - started
        stats, rss_mb = await env.finish()
    out = _shape("ramp", total, seconds, ramp_s + hold_s, rss_mb, stats)
    out.update(
        succeeded=ok,
        failed=failed,
        peak_rps=peak_rps,
        slope=slope,
        ideal_basis="length of the offered schedule",
        throttled_by=stats.get("throttled_by", {}),
    )
    return out


async def multinode(
    tasks: int, rpm: float, agents: int, slots: int, per_agent_cap: int, time_scale: float
) -> dict[str, Any]:
    """The same job twice: cluster-wide limiter, then per-agent caps of ``per_agent_cap``
    concurrent LLM calls per agent (DeerFlow 2.0's per-process limit) with no shared limiter."""
    modes: dict[str, dict[str, Any]] = {}
    for mode in ("cluster", "per_agent"):
        cluster_wide = mode == "cluster"
        work = [llm_task(i, rate_limited=cluster_wide, max_retries=8) for i in range(tasks)]
        caps = () if cluster_wide else ("--handler-slots", f"llm={per_agent_cap}")
        async with environment(
            rpm, None, agents, slots, time_scale, limited=cluster_wide, agent_args=caps
        ) as env:
            seconds, ok, failed = await _run_job(env.client, work)
            retries = (await env.client.stats()).retries
            stats, rss_mb = await env.finish()
        result = _shape(mode, tasks, seconds, tasks / (rpm / 60), rss_mb, stats)
        result.update(succeeded=ok, failed=failed, retries=retries)
        modes[mode] = result
    best = modes["cluster"]
    out = {k: v for k, v in best.items() if k != "workload"}
    out.update(
        workload="ratelimit-multinode",
        agents=agents,
        per_agent_cap=per_agent_cap,
        rpm=rpm,
        cluster=modes["cluster"],
        per_agent=modes["per_agent"],
        ideal_basis="tasks / (rpm / 60)",
    )
    return out


async def unknown(
    tasks: int, rpm: float, agents: int, slots: int, time_scale: float, provider: str = "llm"
) -> dict[str, Any]:
    """No limit configured for the key; the simulator enforces ``rpm``. The llm provider states
    its limit in x-ratelimit headers; the search provider says nothing but 429."""
    if provider == "search":
        work = [search_task(i, max_retries=20) for i in range(tasks)]
        key = f"search/{API_KEY}"
    else:
        work = [llm_task(i, rate_limited=True, max_retries=8) for i in range(tasks)]
        key = RATE_KEY
    target = 0.9 * rpm / 60
    async with environment(rpm, None, agents, slots, time_scale, limited=False) as env:
        samples: list[tuple[float, int]] = []

        async def sample() -> None:
            while True:
                s = await env.provider_stats()
                samples.append((time.perf_counter(), int(s.get("served", 0))))
                await asyncio.sleep(0.25)

        sampler = asyncio.get_running_loop().create_task(sample())
        started = time.perf_counter()
        seconds, ok, failed = await _run_job(env.client, work)
        sampler.cancel()
        learned = [k for k in (await env.client.stats()).rate_keys if k.key == key]
        stats, rss_mb = await env.finish()
    reached = math.nan
    for (t0, n0), (t1, n1) in zip(samples, samples[4:], strict=False):  # 1 s windows
        if (n1 - n0) / (t1 - t0) >= target:
            reached = t1 - started
            break
    out = _shape("unknown", tasks, seconds, tasks / (rpm / 60), rss_mb, stats)
    out.update(
        provider=provider,
        succeeded=ok,
        failed=failed,
        true_rpm=rpm,
        seconds_to_90pct=round(reached, 2),
        learned_rps=round(learned[0].paced_rps, 2) if learned else None,
        limit_stated=learned[0].limit_stated if learned else None,
        ideal_basis="tasks / (true rpm / 60)",
    )
    return out


def add_machine(result: dict[str, Any]) -> dict[str, Any]:
    result["machine"] = machine()
    return result
