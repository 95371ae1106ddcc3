"""The cluster-wide limiter against the provider simulator, over real HTTP, with real
controller, agent and simulator processes."""

from __future__ import annotations

import json
from pathlib import Path

from deerflow_controller.client import Task, TaskEvent

from .conftest import ClusterFactory, connect, sim_stats

MODEL = "sim-model"


def llm(i: int, key: str, *, max_retries: int = 5, est_tokens: float = 60.0) -> Task:
    return Task(
        f"llm-{i}",
        "llm",
        {"model": MODEL, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 32},
        max_retries=max_retries,
        rate_keys=(f"llm/{key}/{MODEL}",),
        est_tokens=est_tokens,
        timeout_s=30,
    )


def provider_env(url: str, key: str) -> dict[str, str]:
    return {"DEERFLOW_LLM_BASE_URL": url, "DEERFLOW_LLM_API_KEY": key}


def limits_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "limits.toml"
    path.write_text(body)
    return str(path)


async def test_a_retry_after_is_honoured_and_the_retry_goes_out_within_100_ms(
    make_cluster: ClusterFactory, make_simulator: object, tmp_path: Path
) -> None:
    # The provider allows 1 request per second; the controller knows nothing of the key and
    # starts at 5 per second, so its second request meets a 429 with a Retry-After.
    sim = await make_simulator("--time-scale", "0.001", "--key", "k1=rpm:60")  # type: ignore[operator]
    async with make_cluster(1, agent_env=provider_env(sim.url, "k1")) as cluster:
        client = await connect(cluster)
        job = await client.submit([llm(i, "k1") for i in range(2)])
        events = [ev async for ev in job.events(timeout_s=60)]
        await client.close()
    retrying = [ev for ev in events if ev.state == "RETRYING"]
    assert retrying, "the provider should have answered one request with 429"
    first = retrying[0]
    assert first.error_kind == "HANDLER_ERROR" and "429" in first.error
    retry_dispatch = next(
        ev
        for ev in events
        if ev.task_id == first.task_id and ev.state == "DISPATCHED" and ev.seq > first.seq
    )
    # Controller timestamps: never before the Retry-After, and at most 100 ms after it.
    assert first.not_before - first.time >= 0.9
    assert first.not_before <= retry_dispatch.time <= first.not_before + 0.1
    assert all(ev.state == "SUCCEEDED" for ev in events if ev.terminal)


async def test_token_accounting_follows_the_usage_providers_report(
    make_cluster: ClusterFactory, make_simulator: object, tmp_path: Path
) -> None:
    sim = await make_simulator("--time-scale", "0.001", "--key", "k2=rpm:6000,tpm:1000000")  # type: ignore[operator]
    limits = limits_file(tmp_path, '[[ratelimit.keys]]\npattern = "llm/k2/*"\ntpm = 1000000\n')
    async with make_cluster(
        1, agent_env=provider_env(sim.url, "k2"), controller_args=("--limits", limits)
    ) as cluster:
        client = await connect(cluster)
        results = await (await client.submit([llm(i, "k2") for i in range(20)])).wait()
        key_stats = {k.key: k for k in (await client.stats()).rate_keys}
        await client.close()
    reported = sum(json.loads(r.output)["usage"]["total_tokens"] for r in results.values())
    provider = await sim_stats(sim.url, "k2")
    assert all(r.ok for r in results.values())
    assert key_stats[f"llm/k2/{MODEL}"].tokens == reported
    assert provider["tokens"] == reported


async def test_a_401_fails_the_task_at_once_and_is_never_retried(
    make_cluster: ClusterFactory, make_simulator: object
) -> None:
    sim = await make_simulator("--time-scale", "0.001", "--key", "good=rpm:6000")  # type: ignore[operator]
    async with make_cluster(1, agent_env=provider_env(sim.url, "wrong-key")) as cluster:
        client = await connect(cluster)
        job = await client.submit([llm(0, "wrong-key", max_retries=5)])
        events: list[TaskEvent] = [ev async for ev in job.events(timeout_s=30)]
        await client.close()
    assert [ev.state for ev in events][-1] == "FAILED"
    assert events[-1].error_kind == "FATAL" and "401" in events[-1].error
    assert "wrong-key" not in events[-1].error
    assert not [ev for ev in events if ev.state == "RETRYING"]
    # The provider saw exactly one request from the unknown key: the task's only attempt.
    assert (await sim_stats(sim.url, "wrong-key"))["unauthorized"] == 1


async def test_a_429_storm_never_sends_more_requests_than_the_budget_allows(
    make_cluster: ClusterFactory, make_simulator: object, tmp_path: Path
) -> None:
    # The controller believes the key allows 600 per minute (10/s); the provider really allows
    # 60 (1/s): most requests meet 429s. Retries go through the same budget, never around it.
    sim = await make_simulator("--time-scale", "0.001", "--key", "k3=rpm:60")  # type: ignore[operator]
    limits = limits_file(
        tmp_path, '[[ratelimit.keys]]\npattern = "llm/k3/*"\nrpm = 600\nadaptive = false\n'
    )
    async with make_cluster(
        1, agent_env=provider_env(sim.url, "k3"), controller_args=("--limits", limits)
    ) as cluster:
        client = await connect(cluster)
        job = await client.submit([llm(i, "k3", max_retries=50) for i in range(8)])
        events = [ev async for ev in job.events(timeout_s=120)]
        await client.close()
    provider = await sim_stats(sim.url, "k3")
    requests = provider["served"] + provider["throttled"] + provider["failed"]
    elapsed = max(ev.time for ev in events) - min(ev.time for ev in events)
    budget = 600 / 60 * 0.98 * elapsed + max(1.0, 600 / 60 * 0.98 * 0.5) + 1
    assert provider["throttled"] > 0, "the provider should have pushed back"
    assert requests <= budget
    assert all(ev.state == "SUCCEEDED" for ev in events if ev.terminal)
