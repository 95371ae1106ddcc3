"""Bad input typed by a person gets one line naming the field or the fix, never a traceback: the
real ``deerflow``, ``deerflow-controller`` and ``deerflow-agent`` entry points, their stderr and
exit codes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from deerflow_bench import READY_PREFIX, Cluster
from deerflow_controller.service.launcher import ManagedProcess, _env

from .conftest import ClusterFactory, connect

BIN = Path(sys.executable).parent
DEERFLOW = str(BIN / "deerflow")
CONTROLLER = str(BIN / "deerflow-controller")
AGENT = str(BIN / "deerflow-agent")


def _run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run an entry point to its end (killed if it outlives ``timeout_s``)."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout_s, env=_env(quiet=True)
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port this test holds (listening) until it ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


JOB_FILES: list[tuple[str, str, str, str]] = [
    (
        "priority a word",
        "job.jsonl",
        '{"id": "a", "handler": "echo"}\n{"id": "b", "handler": "echo", "priority": "high"}\n',
        'job.jsonl line 2: task "b": "priority" must be an integer, got "high"',
    ),
    (
        "depends_on a string",
        "job.jsonl",
        '{"id": "plan", "handler": "echo"}\n{"id": "b", "handler": "echo", "depends_on": "plan"}',
        'job.jsonl line 2: task "b": "depends_on" must be a list of strings, got "plan"',
    ),
    (
        "JSON array with a missing comma on line 3",
        "job.json",
        '[\n  {"id": "a", "handler": "echo"},\n  {"id": "b" "handler": "echo"}\n]\n',
        "job.json line 3, column 14: not JSON (Expecting ',' delimiter)",
    ),
    (
        "JSON lines with a bad line 2",
        "job.jsonl",
        '{"id": "a", "handler": "echo"}\n{"id": "b", handler: "echo"}\n',
        "job.jsonl line 2, column 13: not JSON (Expecting property name enclosed in double quotes)",
    ),
    (
        "a bad value in an array names its line",
        "job.json",
        '{"tasks": [\n  {"id": "a", "handler": "echo"},\n  {"id": "b", "handler": "echo",\n'
        '   "cache": "maybe"}\n]}\n',
        'job.json line 3: task "b": "cache" must be one of default, off, on, refresh, got "maybe"',
    ),
    (
        "a misspelt key",
        "job.jsonl",
        '{"id": "a", "handler": "echo", "heartbeat_timeout": 5}\n',
        'job.jsonl line 1: task "a": unknown key "heartbeat_timeout"; did you mean '
        '"heartbeat_timeout_s"?',
    ),
    (
        "a boolean as a string",
        "job.jsonl",
        '{"id": "a", "handler": "echo", "split": "no"}\n',
        'job.jsonl line 1: task "a": "split" must be true or false, got "no"',
    ),
    (
        "a timeout that is not finite",
        "job.jsonl",
        '{"id": "a", "handler": "echo", "timeout_s": NaN}\n',
        'job.jsonl line 1: task "a": "timeout_s" must be a finite number, got NaN',
    ),
    (
        "no handler",
        "job.jsonl",
        '{"id": "a"}\n',
        'job.jsonl line 1: task "a": "handler" is missing; every task needs it',
    ),
    (
        "a priority the wire cannot carry",
        "job.jsonl",
        '{"id": "a", "handler": "echo", "priority": 1000000000000}\n',
        "job.jsonl line 1: task \"a\": task 'a': priority 1000000000000 does not fit the wire's "
        "int32; use -1000000 to 1000000 (higher runs first)",
    ),
]


@pytest.mark.parametrize(
    ("case", "name", "text", "message"), JOB_FILES, ids=[c[0] for c in JOB_FILES]
)
def test_a_bad_job_file_is_one_line_naming_the_line_task_and_key_with_exit_code_2(
    tmp_path: Path, case: str, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    # Nobody listens on the controller address: the file must be refused before any call.
    done = subprocess.run(
        [DEERFLOW, "submit", name, "--controller", f"127.0.0.1:{_free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(quiet=True),
    )
    assert done.stderr.splitlines() == [f"error: {message}"]
    assert done.returncode == 2


def test_a_taken_grpc_port_is_one_line_naming_the_port_and_the_flag(taken_port: int) -> None:
    done = _run(CONTROLLER, "--port", str(taken_port), "--http-port", "0")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"deerflow-controller: cannot listen for gRPC on 127.0.0.1:{taken_port} "
        "(Address already in use); pass another --port (0 picks a free one)"
    ]


def test_a_taken_http_port_is_one_line_naming_the_port_and_the_flag(taken_port: int) -> None:
    done = _run(CONTROLLER, "--port", "0", "--http-port", str(taken_port))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"deerflow-controller: cannot serve HTTP on 127.0.0.1:{taken_port} "
        "(Address already in use); pass another --http-port (0 turns HTTP off)"
    ]


def test_a_taken_agent_metrics_port_is_one_line_naming_the_port_and_the_flag(
    taken_port: int,
) -> None:
    # No controller listens there: the agent must give up on the port before it connects.
    done = _run(AGENT, "--controller", "127.0.0.1:9", "--metrics-port", str(taken_port))
    assert done.stderr.splitlines() == [
        f"deerflow-agent: cannot serve metrics on 127.0.0.1:{taken_port} "
        "(Address already in use); pass another --metrics-port (0 turns it off)"
    ]
    assert done.returncode == 1


async def test_a_grpc_client_on_the_http_port_costs_the_controller_one_warning_line() -> None:
    http_port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        CONTROLLER, "--port", "0", "--http-port", str(http_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(quiet=True),
    )  # fmt: skip
    controller = ManagedProcess(proc, "deerflow-controller")
    try:
        grpc_address = await controller._await_ready_line(READY_PREFIX, 30)
        for _ in range(3):  # a client retrying: still one line in the controller's log
            client = await asyncio.create_subprocess_exec(
                DEERFLOW, "stats", "--controller", f"127.0.0.1:{http_port}",
                stderr=asyncio.subprocess.PIPE, env=_env(quiet=True),
            )  # fmt: skip
            _, err = await asyncio.wait_for(client.communicate(), 60)
            assert client.returncode == 1
            assert err.decode().splitlines() == [
                f"error (UNAVAILABLE): 127.0.0.1:{http_port} answers HTTP/1, not gRPC: is it "
                "the controller's --http-port? Point the client at its gRPC --port"
            ]
        # And the other way round: a browser or curl on the gRPC port.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http://{grpc_address}/metrics")
    finally:
        controller.signal(signal.SIGTERM)
        assert proc.stderr is not None
        log = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        await controller.stop()
    assert "Traceback" not in log
    lines = log.splitlines()
    assert len(lines) == 1, log
    assert "WARNING" in lines[0]
    assert "refused an HTTP/2 connection (a gRPC client? gRPC is served on --port)" in lines[0]


async def test_a_job_file_sets_every_task_option_and_watch_shows_why_and_where(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster: Cluster = make_cluster(1)
    await cluster.__aenter__()
    await (await connect(cluster)).close()  # returns once the agent is connected
    options = {
        "priority": 2, "timeout_s": 10, "max_retries": 1, "labels": {}, "rate_keys": ["k/1"],
        "est_tokens": 10, "tenant": "t", "schedule_to_start_s": 30, "heartbeat_timeout_s": 20,
        "split": False, "partial_results": True, "est_duration_s": 0.01,
    }  # fmt: skip
    tasks = [
        {"id": "first", "handler": "echo", "payload": {"q": 1}, "cache": "on", **options},
        # The same tenant as "first": the cache is kept per tenant.
        {"id": "again", "handler": "echo", "payload": {"q": 1}, "cache": "on", "tenant": "t",
         "depends_on": ["first"]},
        {"id": "bytes", "handler": "echo", "payload_b64": "aGVsbG8="},
    ]  # fmt: skip
    job_file = tmp_path / "job.jsonl"
    job_file.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    submitted = _run(DEERFLOW, "submit", str(job_file), "--controller", cluster.address)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    watched = _run(DEERFLOW, "watch", job_id, "--all-events", "--controller", cluster.address)
    assert watched.returncode == 0, watched.stderr
    rows = [line.split("\t") for line in watched.stdout.splitlines()]
    assert all(len(row) == 5 for row in rows), watched.stdout
    by_state = {(row[0], row[1]): row for row in rows}
    assert "predicted" in by_state["first", "DISPATCHED"][2]
    assert by_state["first", "SUCCEEDED"][4] == '{"q":1}'
    assert by_state["again", "SUCCEEDED"][2] == "attempt 0, from the exact cache"
    assert by_state["again", "SUCCEEDED"][3].startswith("cache hit")
    assert by_state["bytes", "SUCCEEDED"][4] == "hello"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "700000"])
def test_a_job_deadline_that_is_not_finite_or_out_of_range_is_refused_before_anything_is_sent(
    tmp_path: Path, value: str
) -> None:
    job = tmp_path / "job.json"
    job.write_text('[{"id": "a", "handler": "echo"}]')
    # No controller listens on this port: the flag must be refused before any connection.
    done = _run(DEERFLOW, "submit", str(job), "--controller", f"127.0.0.1:{_free_port()}",
                "--deadline", value)  # fmt: skip
    assert done.returncode == 2
    assert "--deadline" in done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot reach" not in done.stderr


WITHOUT_BENCH = (
    "import sys; sys.modules['deerflow_bench'] = None; "  # as if the bench extra were not installed
    "from deerflow_controller.cli import main; main()"
)


@pytest.mark.parametrize(
    "args",
    [
        ("bench", "noop", "--tasks", "5", "--json"),
        ("bench", "--help"),
        ("demo", "--reports", "1"),
        ("demo", "--help"),
    ],
)
def test_bench_and_demo_without_the_bench_package_say_in_one_line_to_install_its_extra(
    args: tuple[str, ...],
) -> None:
    r = _run(sys.executable, "-c", WITHOUT_BENCH, *args)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.startswith(f"error: `deerflow {args[0]}` needs the bench extra: ")
    assert "pip install 'deerflow-parallel[bench]'" in r.stderr
    assert r.stderr.count("\n") == 1
