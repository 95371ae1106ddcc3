"""Issue #17 item 2: authentication and tenants, closed by default.

Real controller and agent processes. The controller reads an ``--auth-file`` of token digests;
agents join with a join token, clients present bearer tokens mapped to tenants and roles. Each
test fails on the code before authentication (no ``--auth-file``: the controller does not start,
and before that, anyone could join, read and cancel)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest

from deerflow_bench import Cluster
from deerflow_bench._launcher import READY_PREFIX, ControllerProcess
from deerflow_controller.client import (
    AsyncClient,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    Task,
)
from deerflow_controller.service.launcher import ManagedProcess, _env
from deerflow_protos import agent_pb2_grpc, client_pb2, client_pb2_grpc
from tests.auth_files import Tokens, auth_toml, write_atomically

from .conftest import ClusterFactory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Secured:
    """A started cluster with authentication on, its HTTP port, and its tokens."""

    def __init__(self, cluster: Cluster, http_port: int, tokens: Tokens) -> None:
        self.cluster = cluster
        self.http = f"http://127.0.0.1:{http_port}"
        self.tokens = tokens

    @property
    def address(self) -> str:
        return self.cluster.address

    def client(self, token: str | None) -> AsyncClient:
        return AsyncClient(self.address, timeout_s=30, token=token)


@pytest.fixture
async def secured(make_cluster: ClusterFactory, auth_file: Path, tokens: Tokens) -> Secured:
    return await start_secured(make_cluster, auth_file, tokens)


async def start_secured(make_cluster: ClusterFactory, auth_file: Path, tokens: Tokens) -> Secured:
    """A cluster of one agent with authentication on (stopped by ``make_cluster``). Started in
    the test's body when the test reads the daemons' output (capfd sees only processes started
    while it captures)."""
    http_port = _free_port()
    cluster = make_cluster(
        1,
        controller_args=("--auth-file", str(auth_file), "--http-port", str(http_port)),
        agent_env={"DEERFLOW_JOIN_TOKEN": tokens.join},
    )
    await cluster.__aenter__()
    out = Secured(cluster, http_port, tokens)
    async with out.client(tokens.admin) as admin:
        await admin.agents(wait_for=1, timeout_s=30)
    return out


async def _connect_status(address: str, token: str | None) -> tuple[grpc.StatusCode, str]:
    """Open an agent stream with ``token`` (None: no metadata): its status. The controller
    refuses on the call's metadata, before it reads a message, so no Hello is written: a write
    racing the refusal can end the call with the client core's own INTERNAL ("Internal error
    from Core") instead of the server's status."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    async with grpc.aio.insecure_channel(address) as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=metadata)
        code = await asyncio.wait_for(call.code(), 30)
        return code, await call.details() or ""


async def test_an_agent_without_or_with_a_wrong_join_token_is_refused_and_gets_no_task(
    secured: Secured,
) -> None:
    t = secured.tokens
    for token in (None, t.wrong, t.alice):  # a client's token is not a join token either
        code, details = await _connect_status(secured.address, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        assert "join token" in details and "DEERFLOW_JOIN_TOKEN" in details
    # Agent processes with no token and a wrong one, trying to join while a job runs.
    await secured.cluster.add_agent("no-token", env={"DEERFLOW_JOIN_TOKEN": ""})
    await secured.cluster.add_agent("wrong-token", env={"DEERFLOW_JOIN_TOKEN": t.wrong})
    async with secured.client(t.alice) as alice:
        job = await alice.submit([Task(f"t{i}", "echo", {"i": i}) for i in range(40)])
        results = await job.wait(timeout_s=60)
        assert len(results) == 40 and all(r.ok for r in results.values())
        assert {r.agent_id for r in results.values()} == {"agent-1"}
        assert [a.agent_id for a in await alice.agents()] == ["agent-1"]


async def test_a_client_without_or_with_a_wrong_token_is_unauthenticated_and_no_token_is_logged(
    make_cluster: ClusterFactory,
    auth_file: Path,
    tokens: Tokens,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DEERFLOW_LOG_LEVEL", "DEBUG")
    http_port = _free_port()
    cluster = make_cluster(
        1,
        controller_args=("--auth-file", str(auth_file), "--http-port", str(http_port)),
        agent_env={"DEERFLOW_JOIN_TOKEN": tokens.join},
    )
    secured = Secured(await cluster.__aenter__(), http_port, tokens)
    for token in (None, tokens.wrong):
        async with secured.client(token) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.submit([Task("x", "echo")])
            assert "token" in info.value.message
            with pytest.raises(AuthenticationError):
                await client.get_job("any")
            with pytest.raises(AuthenticationError):
                await client.stats()
    async with secured.client(tokens.metrics) as scraper:
        with pytest.raises(PermissionDeniedError):
            await scraper.submit([Task("x", "echo")])
    await _connect_status(secured.address, tokens.wrong)
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {tokens.wrong}"}
        async with session.get(f"{secured.http}/metrics", headers=headers) as resp:
            assert resp.status == 401
    async with secured.client(tokens.alice) as alice:
        assert (await (await alice.submit([Task("ok", "echo")])).wait(timeout_s=30))["ok"].ok
    await cluster.stop()
    logs = capfd.readouterr()
    assert "refused a token that is not valid" in logs.err  # the refusals were logged...
    for token in tokens.all():  # ...and no token, good or wrong, was
        assert token not in logs.err and token not in logs.out


async def test_another_tenants_job_is_not_found_and_cannot_be_cancelled(
    secured: Secured,
) -> None:
    t = secured.tokens
    async with (
        secured.client(t.alice) as alice,
        secured.client(t.bob) as bob,
        secured.client(t.admin) as admin,
    ):
        ids = [f"s{i}" for i in range(4)]
        job = await alice.submit(
            [Task(i, "sleep", {"seconds": 0.3}) for i in ids], job_id="alice-job"
        )
        # Bob gets exactly what a job that does not exist gets.
        with pytest.raises(NotFoundError) as missing:
            await bob.get_job("no-such-job")
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get_job": lambda: bob.get_job(job.job_id),
            "get_task": lambda: bob.get_task(job.job_id, "s0"),
            "cancel": lambda: bob.cancel(job.job_id),
            "watch": lambda: bob.wait(job.job_id, timeout_s=30),
        }
        for name, call in calls.items():
            with pytest.raises(NotFoundError) as info:
                await call()
            assert info.value.message == missing.value.message.replace("no-such-job", job.job_id), (
                name
            )
        # A watch waiting for its job's submit waits alice's out as one that never comes.
        async with grpc.aio.insecure_channel(secured.address) as channel:
            stub = client_pb2_grpc.JobServiceStub(channel)
            waited = []
            for job_id in (job.job_id, "no-such-job"):
                watch = stub.WatchJob(
                    client_pb2.WatchJobRequest(job_id=job_id, wait_for_submit_s=0.2),
                    metadata=(("authorization", f"Bearer {t.bob}"),),
                )
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await watch.read()
                assert ended.value.code() == grpc.StatusCode.NOT_FOUND
                waited.append((ended.value.details() or "").replace(job_id, "ID"))
            assert waited[0] == waited[1] and "within the 0.2 s" in waited[0]
        # Nor can bob submit tasks for tenant a.
        with pytest.raises(PermissionDeniedError) as refused:
            await bob.submit([Task("x", "echo", tenant="a")])
        assert "tenant" in refused.value.message and "'b'" in refused.value.message
        # An admin sees every tenant's jobs; bob's own view of the stats has none of alice's.
        assert (await admin.get_job(job.job_id)).total == 4
        assert dict((await bob.stats()).tasks_by_state) == {}
        assert sum(dict((await alice.stats()).tasks_by_state).values()) == 4
        results = await job.wait(timeout_s=60)
        assert sorted(results) == ids and all(r.ok for r in results.values())


async def test_a_users_drain_is_permission_denied_and_an_admins_passes(secured: Secured) -> None:
    t = secured.tokens
    async with secured.client(t.alice) as alice, secured.client(t.admin) as admin:
        with pytest.raises(PermissionDeniedError) as info:
            await alice.drain_agent("agent-1")
        assert "admin" in info.value.message
        assert [a.draining for a in await admin.agents()] == [False]
        with pytest.raises(NotFoundError):  # past the role check: no such agent
            await admin.drain_agent("no-such-agent")


async def test_http_stats_and_metrics_need_a_token_and_health_stays_open(
    secured: Secured,
) -> None:
    t = secured.tokens

    async def status(path: str, token: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(secured.http + path, headers=headers) as resp,
        ):
            return resp.status

    assert await status("/api/stats") == 401
    assert await status("/api/stats", t.wrong) == 401
    assert await status("/api/stats", t.alice) == 403
    assert await status("/api/stats", t.admin) == 200
    assert await status("/metrics") == 401
    for token in (t.metrics, t.alice, t.admin):
        assert await status("/metrics", token) == 200
    assert await status("/healthz") == 200
    assert await status("/readyz") == 200


async def _run_controller(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the controller until it exits (it is expected to refuse to start)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deerflow_controller.main", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    managed = ManagedProcess(proc, "deerflow-controller")
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await managed.stop()
    return managed.returncode or 0, err.decode()


async def test_a_non_loopback_bind_without_credentials_refuses_to_start_unless_insecure(
    capfd: pytest.CaptureFixture[str],
) -> None:
    env = _env(quiet=False, extra={"DEERFLOW_LOG_LEVEL": "INFO"})
    code, err = await _run_controller(
        "--host", "0.0.0.0", "--port", "0", "--http-port", "0", env=env
    )  # fmt: skip
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--auth-file" in lines[0] and "--insecure" in lines[0], err
    # An HTTP side on another host counts too.
    code, err = await _run_controller(
        "--port", "0", "--http-host", "0.0.0.0", "--http-port", str(_free_port()), env=env
    )  # fmt: skip
    assert code == 1 and "--auth-file" in err, err
    controller = await ControllerProcess.start(["--insecure"], host="0.0.0.0", quiet=False)
    try:
        assert controller.address.startswith("0.0.0.0:")
    finally:
        await controller.stop()
    loopback = await ControllerProcess.start([], quiet=False)
    await loopback.stop()
    err = capfd.readouterr().err
    assert "WARNING" in err and "--insecure: no authentication on 0.0.0.0" in err
    assert "no authentication: listening on loopback only" in err
    assert READY_PREFIX.strip()  # the ready line was read by ControllerProcess.start


async def test_the_auth_file_is_reloaded_new_tokens_work_and_revoked_ones_are_refused(
    capfd: pytest.CaptureFixture[str], make_cluster: ClusterFactory, auth_file: Path, tokens: Tokens
) -> None:
    secured = await start_secured(make_cluster, auth_file, tokens)
    t = secured.tokens
    carol = "carol-fresh-token-123456789"
    async with secured.client(t.alice) as alice, secured.client(carol) as new:
        assert (await alice.stats()).controller_id
        with pytest.raises(AuthenticationError):
            await new.stats()
        # Rotate: carol in, alice out. Checked at the next call (the file's stat changed).
        write_atomically(
            auth_file,
            auth_toml(
                t, clients={"carol": (carol, "a", "user"), "root": (t.admin, "ops", "admin")}
            ),
        )
        assert (await new.stats()).controller_id
        with pytest.raises(AuthenticationError):
            await alice.stats()
        # A broken file is refused with one line naming file, line and key; carol stays in.
        write_atomically(auth_file, '[[client]]\nname = "x"\nrole = "user"\nsha256 = "00"\n')
        assert (await new.stats()).controller_id
    await secured.cluster.stop()
    err = capfd.readouterr().err
    assert f"{auth_file} line 1 ([[client]] #1): key 'tenant'" in err or (
        f"{auth_file} line 1 ([[client]] #1): key 'sha256'" in err
    ), err
    assert carol not in err


async def test_local_agents_get_a_join_token_when_auth_is_on(
    auth_file: Path, tokens: Tokens
) -> None:
    controller = await ControllerProcess.start(
        ["--auth-file", str(auth_file), "--local-agents", "1", "--agent-slots", "2"]
    )
    try:
        async with AsyncClient(controller.address, timeout_s=30, token=tokens.alice) as alice:
            agents = await alice.agents(wait_for=1, timeout_s=30)
            assert [a.agent_id.startswith("local-1-") for a in agents] == [True]
            results = await (await alice.submit([Task("e", "echo", "hi")])).wait(timeout_s=30)
            assert results["e"].ok and results["e"].agent_id == agents[0].agent_id
    finally:
        await controller.stop()
