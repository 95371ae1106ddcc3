"""Revoking a credential ends the streams already open with it (docs/SECURITY.md, Rotation).

Real controller and agent processes with an ``--auth-file``; the file is rewritten (the
controller notices within a second) or rewritten and followed by SIGHUP. A stream whose token is
gone, or whose tenant or role changed, ends with UNAUTHENTICATED (PERMISSION_DENIED when the
role no longer allows the call) and a sentence saying what to do; an agent whose join token is
revoked leaves, and its attempt runs on another agent; streams of unchanged credentials go on.
Each test fails on the code before: the streams went on, and the agent kept its attempt."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from pathlib import Path

import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import (
    AsyncClient,
    AuthenticationError,
    PermissionDeniedError,
    Task,
    TaskEvent,
)
from tests.auth_files import Tokens, auth_toml, write_atomically

from .conftest import ClusterFactory

LONG = {"seconds": 600}
"""A task that outlasts the test: it is cancelled (or its agent stopped) at the end."""
ENDS_WITHIN_S = 30.0
"""How long a stream may take to end once its credential is revoked: the controller looks at
the file every second, so this is slack for a loaded machine, not the expected time."""


class Watch:
    """A job's WatchJob stream read in the background, without reconnecting (a break shows)."""

    def __init__(self, client: AsyncClient, job_id: str) -> None:
        self.events: list[TaskEvent] = []
        self._arrived = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read(client, job_id))

    async def _read(self, client: AsyncClient, job_id: str) -> None:
        async for event in client.events(job_id, reconnect=False):
            self.events.append(event)
            self._arrived.set()

    async def first(self, state: str = "") -> TaskEvent:
        """The first event (in ``state``, when given): once it came, the stream is open."""

        async def arrived() -> TaskEvent:
            while True:
                for event in self.events:
                    if not state or event.state == state:
                        return event
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(arrived(), 30)

    async def opened(self) -> None:
        await self.first()

    async def ended(self) -> None:
        """Until the stream ended; raises what it ended with."""
        await asyncio.wait_for(self.task, ENDS_WITHIN_S)


async def secured(
    make_cluster: ClusterFactory,
    auth_file: Path,
    join_token: str,
    agent_args: tuple[str, ...] = (),
) -> Cluster:
    """A started controller with ``--auth-file`` and one agent joining with ``join_token``."""
    cluster = make_cluster(
        1,
        agent_args=agent_args,
        controller_args=("--auth-file", str(auth_file)),
        agent_env={"DEERFLOW_JOIN_TOKEN": join_token},
    )
    await cluster.__aenter__()
    return cluster


def client(cluster: Cluster, token: str) -> AsyncClient:
    return AsyncClient(cluster.address, timeout_s=30, token=token)


async def test_a_revoked_tokens_watch_ends_unauthenticated_while_another_tokens_watch_goes_on(
    make_cluster: ClusterFactory, auth_file: Path, tokens: Tokens
) -> None:
    t = tokens
    cluster = await secured(make_cluster, auth_file, t.join)
    async with client(cluster, t.alice) as alice, client(cluster, t.bob) as bob:
        await alice.agents(wait_for=1, timeout_s=30)
        alices = await alice.submit([Task("long", "sleep", LONG)])
        bobs = await bob.submit([Task("long", "sleep", LONG)])
        alice_watch, bob_watch = Watch(alice, alices.job_id), Watch(bob, bobs.job_id)
        await alice_watch.opened()
        await bob_watch.opened()
        # Alice's entry leaves the file; no call follows: the controller notices by itself.
        write_atomically(
            auth_file,
            auth_toml(t, clients={"bob": (t.bob, "b", "user"), "root": (t.admin, "ops", "admin")}),
        )
        with pytest.raises(AuthenticationError) as ended:
            await alice_watch.ended()
        assert ended.value.message == (
            "token 'alice' was revoked in the controller's auth file while this stream was open; "
            "call again with a current token (the operator makes one with `deerflow token new`)"
        )
        # Bob's stream, open all along, carries what happens next and ends as a job's does.
        seen = len(bob_watch.events)
        await bob.cancel(bobs.job_id)
        await bob_watch.ended()
        assert [e.state for e in bob_watch.events[seen:]][-1] == "CANCELLED"
    async with client(cluster, t.admin) as root:
        await root.cancel(alices.job_id)  # its attempt ends, so the agent stops at once


@pytest.mark.usefixtures("plugin_path")
async def test_an_agent_whose_join_token_is_revoked_leaves_and_its_attempt_completes_elsewhere(
    make_cluster: ClusterFactory, auth_file: Path, tokens: Tokens
) -> None:
    t = tokens
    second = "join2-" + secrets.token_urlsafe(24)
    write_atomically(auth_file, auth_toml(t, agents={"pool-1": t.join, "pool-2": second}))
    cluster = await secured(
        make_cluster,
        auth_file,
        t.join,
        agent_args=("--handler", "deerflow_test_plugins:hangs_first_attempt"),
    )
    first = cluster.agents[0]
    try:
        async with client(cluster, t.alice) as alice:
            await alice.agents(wait_for=1, timeout_s=30)
            job = await alice.submit([Task("pinned", "hangs_first_attempt", {"n": 1})])
            # Attempt 1 runs on agent-1 (the only agent) and would never end there.
            watch = Watch(alice, job.job_id)
            assert (await watch.first("RUNNING")).agent_id == "agent-1"
            await cluster.add_agent("agent-2", env={"DEERFLOW_JOIN_TOKEN": second})
            await alice.agents(wait_for=2, timeout_s=30)
            # pool-1 is revoked: its entry leaves the file, and SIGHUP says so.
            write_atomically(auth_file, auth_toml(t, agents={"pool-2": second}))
            assert cluster.controller is not None
            cluster.controller.signal(signal.SIGHUP)
            result = (await job.wait(timeout_s=ENDS_WITHIN_S))["pinned"]
            assert (result.ok, result.agent_id, result.attempt) == (True, "agent-2", 2)
            assert json.loads(result.output) == {"n": 1}
            await watch.ended()  # the job's own stream (alice's token stays) saw it through
            # agent-1 is gone, and stays out: it tries again with its revoked token, refused.
            assert [a.agent_id for a in await alice.agents()] == ["agent-2"]
    finally:
        # Its attempt 1 still hangs (nobody can cancel it now): no drain to wait for.
        first.signal(signal.SIGKILL)
        await first.wait(30)


async def test_a_token_whose_tenant_or_role_changed_loses_its_streams_and_others_keep_theirs(
    make_cluster: ClusterFactory, auth_file: Path, tokens: Tokens
) -> None:
    t = tokens
    carol = "carol-" + secrets.token_urlsafe(24)
    cluster = await secured(make_cluster, auth_file, t.join)
    async with (
        client(cluster, t.alice) as alice,
        client(cluster, t.bob) as bob,
        client(cluster, t.admin) as root,
    ):
        agents = await root.agents(wait_for=1, timeout_s=30)
        jobs = {
            name: await c.submit([Task("long", "sleep", LONG)])
            for name, c in (("alice", alice), ("bob", bob), ("root", root))
        }
        watches = {
            name: Watch(c, jobs[name].job_id)
            for name, c in (("alice", alice), ("bob", bob), ("root", root))
        }
        for watch in watches.values():
            await watch.opened()
        # Alice moves to tenant c, bob becomes a metrics scraper, carol comes in; root and the
        # agent's join token stay as they were.
        write_atomically(
            auth_file,
            auth_toml(
                t,
                clients={
                    "alice": (t.alice, "c", "user"),
                    "bob": (t.bob, "", "metrics"),
                    "root": (t.admin, "ops", "admin"),
                    "carol": (carol, "a", "user"),
                },
            ),
        )
        assert cluster.controller is not None
        cluster.controller.signal(signal.SIGHUP)
        with pytest.raises(AuthenticationError) as moved:
            await watches["alice"].ended()
        assert moved.value.message.startswith(
            "token 'alice' was changed (now tenant 'c', role 'user') in the controller's auth file"
        )
        assert "`deerflow token new`" in moved.value.message
        with pytest.raises(PermissionDeniedError) as demoted:
            await watches["bob"].ended()
        assert demoted.value.message.startswith(
            "token 'bob' was changed (now role 'metrics') in the controller's auth file"
        )
        # The same reload kept root's stream and the agent's: root's goes on to its job's end,
        # and the agent is the one connected before (the same stream, not a new one).
        seen = len(watches["root"].events)
        for job in jobs.values():
            await root.cancel(job.job_id)
        await watches["root"].ended()
        assert [e.state for e in watches["root"].events[seen:]][-1] == "CANCELLED"
        after = await root.agents()
        assert [(a.agent_id, a.connected_at) for a in after] == [
            (a.agent_id, a.connected_at) for a in agents
        ]


async def test_a_revoked_tokens_session_stream_ends_and_its_wait_says_why(
    make_cluster: ClusterFactory, auth_file: Path, tokens: Tokens
) -> None:
    """A wait on the SDK's Session stream (``submit(watch=...)``): the stream ends when the
    token is revoked; the SDK's fall back to WatchJob is refused the same way, and the wait
    raises that sentence instead of hanging or resubmitting."""
    t = tokens
    cluster = await secured(make_cluster, auth_file, t.join)
    async with client(cluster, t.alice) as alice:
        await alice.agents(wait_for=1, timeout_s=30)
        job = await alice.submit([Task("long", "sleep", LONG)], watch="results")
        assert job._opened is not None
        call = job._opened[1]
        waiting = asyncio.ensure_future(job.wait())
        write_atomically(
            auth_file,
            auth_toml(t, clients={"bob": (t.bob, "b", "user"), "root": (t.admin, "ops", "admin")}),
        )
        with pytest.raises(AuthenticationError) as ended:
            await asyncio.wait_for(waiting, ENDS_WITHIN_S)
        assert "token 'alice'" in ended.value.message and "\n" not in ended.value.message
        assert call.session.broken
    async with client(cluster, t.admin) as root:
        await root.cancel(job.job_id)  # its attempt ends, so the agent stops at once
