"""The fuzz target: one real controller process and one real agent, with good jobs flowing.

:class:`FuzzTarget` starts ``deerflow-controller`` (its log, stderr, goes to a file the checks
read) and ``deerflow-agent`` as processes of this interpreter, and stops both by their own pids.
:class:`GoodJobProbe` is a thread that submits small jobs through the public SDK the whole time
and checks that every task of each ends exactly once, SUCCEEDED, with the right output.
:meth:`FuzzTarget.check` is the property every fuzz example ends with: the same process is
alive, its RSS is within :data:`RSS_BOUND_BYTES`, its log has no traceback, and the probe has
seen no wrong answer."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import IO

import grpc
import psutil

from deerflow_controller.client import Client, Task

READY_PREFIX = "deerflow-controller listening on "
AGENT_ID = "fuzz-agent"
"""The one real agent's id. Fuzzed DrainAgent requests and impostor Hellos never use it: taking
over a connected agent's id is issue #17 finding 3 (authentication), not something fuzzing finds
anew, and it would stop the probe that tells whether the controller still works."""

RSS_BOUND_BYTES = 256 << 20
"""The controller's resident memory never exceeds this while it is fuzzed. Measured peaks: 84-89
MiB for the modules without huge messages (about 80 MiB after start-up with one agent), 179 MiB
for test_rpcs.py, whose 8 huge messages (0.1-7.4 MB) include a 20,000-task job it keeps."""

CALL_DEADLINE_S = 10.0
"""Every fuzzed call answers within this with a status, or the controller is hanging."""

PROBE_DEADLINE_S = 30.0
"""A good job of the probe finishes within this, or the controller is hanging."""

ALLOWED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        # Refusals of a caller without credentials (issue #17 deliver 2, on wip/auth).
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
"""What the controller may answer a fuzzed call: a refusal that names the problem, or OK. Never
UNKNOWN or INTERNAL (an exception escaped a servicer), never DEADLINE_EXCEEDED (a hang), never
UNAVAILABLE (a single controller always leads)."""

LOG_ALARMS = ("Traceback", " ERROR ", " CRITICAL ")
"""Lines of the controller's log that mean an exception escaped or was logged as an error."""


class FuzzTarget:
    """A controller and an agent on loopback, started by :meth:`start`, stopped by
    :meth:`stop` (SIGTERM, then SIGKILL after 10 s; each by its pid)."""

    def __init__(self, workdir: Path, *, http: bool = False) -> None:
        self.workdir = workdir
        self.log_path = workdir / "controller.log"
        self.http_port = _free_port() if http else 0
        """The dashboard's port (/api/stats, /metrics), or 0: no HTTP side."""
        self.controller: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.pid = 0
        self.peak_rss = 0
        self.probe: GoodJobProbe | None = None
        self.fuzz_jobs: list[str] = []
        """Jobs the fuzzing submitted (each cancelled at once, so done)."""
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DEERFLOW_LOG_LEVEL": "WARNING"}
        self._log_file = self.log_path.open("wb")
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "deerflow_controller.main", "--host", "127.0.0.1",
             "--port", "0", "--http-port", str(self.http_port)],
            stdout=subprocess.PIPE, stderr=self._log_file, env=env,
        )  # fmt: skip
        self.pid = self.controller.pid
        self.address = _ready_address(self.controller, 30.0)
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "deerflow_agent", "--controller", self.address,
             "--id", AGENT_ID, "--slots", "16"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        with Client(self.address, timeout_s=30) as client:
            client.agents(wait_for=1, timeout_s=30)
        self.probe = GoodJobProbe(self.address)
        self.probe.start()

    def stop(self) -> None:
        """Stops the probe, then both processes whatever happened before."""
        try:
            if self.probe is not None:
                self.probe.stop()
        finally:
            for proc in (self.agent, self.controller):
                if proc is not None:
                    _stop(proc)
            if self._log_file is not None:
                self._log_file.close()

    def done_job(self, pick: int) -> str:
        """The id of a job that is done here (a finished good job or a cancelled fuzzed one),
        chosen by ``pick``."""
        assert self.probe is not None
        ids = self.probe.done_ids + self.fuzz_jobs
        return ids[pick % len(ids)] if ids else "none-yet"

    def rss(self) -> int:
        """The controller's resident set size now, in bytes (raises if the process is gone)."""
        rss = int(psutil.Process(self.pid).memory_info().rss)
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def log_alarms(self) -> list[str]:
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if any(a in line for a in LOG_ALARMS)]

    def check(self) -> None:
        """The properties that hold after every fuzzed input (cheap: no call to the controller):
        the process is alive with the same pid, its RSS is within the bound, its log has no
        traceback or ERROR line, and the probe has seen no good job go wrong."""
        assert self.controller is not None
        code = self.controller.poll()
        assert code is None, f"the controller exited with {code}; log: {self.log_path}"
        assert self.controller.pid == self.pid
        rss = self.rss()
        assert rss <= RSS_BOUND_BYTES, f"controller RSS {rss >> 20} MiB over the bound"
        alarms = self.log_alarms()
        assert not alarms, "\n".join(alarms[:20])
        assert self.probe is not None
        assert not self.probe.errors, self.probe.errors[:5]

    def check_serving(self) -> None:
        """:meth:`check`, then wait for the probe to finish one more good job that was submitted
        after now: the controller still schedules, not just answers."""
        self.check()
        assert self.probe is not None
        self.probe.wait_for_progress(PROBE_DEADLINE_S)
        self.check()


class GoodJobProbe(threading.Thread):
    """Submits small jobs through the SDK until stopped: an echo task, one that depends on it,
    and a third beside them, each with a payload of its own. Every task must end exactly once,
    SUCCEEDED with its payload as output, within :data:`PROBE_DEADLINE_S`; anything else is
    recorded in ``errors``."""

    def __init__(self, address: str) -> None:
        super().__init__(name="fuzz-good-job-probe", daemon=True)
        self.address = address
        self.errors: list[str] = []
        self.completed = 0
        self.done_ids: list[str] = []
        self._submitted = 0
        self._stop_event = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        with Client(self.address, timeout_s=PROBE_DEADLINE_S) as client:
            while not self._stop_event.is_set():
                try:
                    self._one_job(client)
                except Exception as e:
                    self.errors.append(f"good job failed: {type(e).__name__}: {e}")
                # Pacing, not synchronisation: leave the CPU to the fuzzing.
                self._stop_event.wait(0.1)

    def _one_job(self, client: Client) -> None:
        with self._progress:
            self._submitted += 1
            n = self._submitted
        tasks = [
            Task("a", "echo", f"probe {n} a".encode()),
            Task("b", "echo", f"probe {n} b".encode(), depends_on=["a"]),
            Task("c", "echo", f"probe {n} c".encode(), priority=7),
        ]
        want = {t.id: t.payload for t in tasks}
        job = client.submit(tasks, job_id=f"probe-{n}-{os.getpid()}")
        ends: Counter[str] = Counter()
        for ev in client.events(job.job_id, terminal_only=True, timeout_s=PROBE_DEADLINE_S):
            ends[ev.task_id] += 1
            if ev.state != "SUCCEEDED" or ev.output != want.get(ev.task_id):
                self.errors.append(f"job {job.job_id}: {ev.task_id} ended {ev.state} {ev!r}")
        if ends != Counter(dict.fromkeys(want, 1)):
            self.errors.append(f"job {job.job_id}: terminal events per task {dict(ends)}")
        with self._progress:
            self.completed = n
            self.done_ids.append(job.job_id)
            self._progress.notify_all()

    def wait_for_progress(self, timeout_s: float) -> None:
        """Block until a job submitted after this call has completed; AssertionError after
        ``timeout_s``."""
        with self._progress:
            target = self._submitted + 1
            done = self._progress.wait_for(lambda: self.completed >= target, timeout_s)
        assert done, f"no good job completed within {timeout_s:g} s: the controller hangs"

    def stop(self) -> None:
        self._stop_event.set()
        self.join(PROBE_DEADLINE_S + 5)


def _ready_address(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The address on the controller's ready line; its later stdout is drained by a thread."""
    stdout = proc.stdout
    assert stdout is not None
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for raw in stdout:
            line = raw.decode(errors="replace").strip()
            if not found and line.startswith(READY_PREFIX):
                found.append(line[len(READY_PREFIX) :])
                ready.set()
        ready.set()

    threading.Thread(target=pump, name="controller-stdout", daemon=True).start()
    if not ready.wait(timeout_s) or not found:
        _stop(proc)
        raise RuntimeError(f"the controller did not get ready within {timeout_s:g} s")
    return found[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
