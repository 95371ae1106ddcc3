"""The ``python`` handler: runs a Python snippet (DeerFlow's ``python_repl_tool``) on an agent.

**Security stance: opt-in, per agent.** Everywhere else in deerflow-parallel a payload is data
and a task only names code an operator installed. This handler is the one exception by nature:
its payload *is* code, written by an LLM. It is therefore never installed by default (it is not
in the ``deerflow.handlers`` entry points, so no agent offers it unless told to); an operator
turns it on for chosen agents only::

    deerflow-agent --handler deerflow_dropins.handlers:python

and a task naming ``python`` runs only on those agents (with none connected it fails
UNKNOWN_HANDLER).
Whoever can submit jobs to the controller can then run code on those agents, as DeerFlow's own
``ENABLE_PYTHON_REPL`` lets the LLM run code in the DeerFlow process. Run them as an
unprivileged user, on machines (or containers) that hold no secrets the code must not read.

What the handler does to contain one snippet (defence in depth, not a sandbox):

- a fresh interpreter per snippet, ``sys.executable -I`` (isolated: no ``PYTHON*`` variables,
  no user site-packages, no current directory on ``sys.path``), in a new session (process
  group), so a timeout kills it and every child it started;
- a new empty temporary working directory, removed afterwards, as ``HOME`` and ``TMPDIR`` too,
  and an environment of ``PATH`` and ``LANG`` only (the agent's API keys are not passed);
- resource limits set by the interpreter on itself before the snippet runs
  (``resource.setrlimit``): CPU seconds, address space, size of any file written, open files,
  no core dumps;
- a wall-clock timeout from the attempt's deadline (less a margin to report in time), and
  stdout and stderr each captured up to a bound (the rest is counted and dropped).

It does not restrict the network or what the agent's user may read: use a container or a
network namespace for that.

Payload ``{"code": str, "timeout_s"?: float}``; output (JSON) ``{"stdout", "stderr", "error",
"exit_code", "timed_out", "truncated", "duration_s"}`` where ``error`` is the ``repr`` of the
exception the snippet raised (what DeerFlow's REPL returns), a sentence for a timeout or a
resource limit, or null. The snippet's own failures are results, not task failures: they are
the LLM's to read, and retrying the same code would fail the same way.

Limits come from the agent's environment (read per attempt): ``DEERFLOW_PYTHON_CPU_S`` (default
30), ``DEERFLOW_PYTHON_MEMORY_MB`` (1024), ``DEERFLOW_PYTHON_FILE_MB`` (16),
``DEERFLOW_PYTHON_OUTPUT_KB`` (64, per stream), ``DEERFLOW_PYTHON_TIMEOUT_S`` (60, the longest
wall time whatever the task allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import IO, Any

from deerflow_agent import FatalError, Handler, HandlerKind, TaskContext

__all__ = ["MAX_CODE_CHARS", "PythonLimits", "python"]

MAX_CODE_CHARS = 256 * 1024
"""Longest snippet accepted: LLM-written analysis code is a few KB."""
REPORT_MARGIN_S = 0.5
"""Time kept before the attempt's deadline to kill the snippet and report what it printed."""
MIN_RUN_S = 0.1
SOURCE_NAME = ".snippet.py"
"""The snippet's file in its working directory, its interpreter's stdin."""


@dataclass(frozen=True)
class PythonLimits:
    """What one snippet may use; each is an ``rlimit`` or a bound the handler enforces."""

    cpu_s: int = 30
    """CPU seconds (RLIMIT_CPU): past it the kernel sends SIGXCPU and the snippet dies."""
    memory_mb: int = 1024
    """Address space (RLIMIT_AS): allocations past it raise MemoryError in the snippet."""
    file_mb: int = 16
    """Largest file the snippet may write (RLIMIT_FSIZE): past it a write raises OSError."""
    output_kb: int = 64
    """Stdout and stderr each kept up to this; the rest is dropped and ``truncated`` set."""
    timeout_s: float = 60.0
    """Longest wall time of a snippet, whatever the task's own timeout allows."""
    open_files: int = 64
    """RLIMIT_NOFILE."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PythonLimits:
        """Read ``DEERFLOW_PYTHON_*`` (see the module docstring); a malformed value is a
        FatalError naming the variable (the operator's to fix)."""
        environ = os.environ if env is None else env
        return cls(
            cpu_s=int(_env_number(environ, "DEERFLOW_PYTHON_CPU_S", cls.cpu_s, 1, 3600)),
            memory_mb=int(
                _env_number(environ, "DEERFLOW_PYTHON_MEMORY_MB", cls.memory_mb, 64, 1 << 20)
            ),
            file_mb=int(_env_number(environ, "DEERFLOW_PYTHON_FILE_MB", cls.file_mb, 0, 1 << 20)),
            output_kb=int(
                _env_number(environ, "DEERFLOW_PYTHON_OUTPUT_KB", cls.output_kb, 1, 1 << 16)
            ),
            timeout_s=_env_number(environ, "DEERFLOW_PYTHON_TIMEOUT_S", cls.timeout_s, 1, 86400),
        )


def _env_number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise FatalError(f"python: {name} must be a number from {low:g} to {high:g}, got {raw!r}")
    return value


# The interpreter the snippet runs in applies its own limits, then executes the snippet read
# from stdin as __main__; an exception the snippet raises is written as its repr to a pipe apart
# from what the snippet prints. (Setting limits here rather than in a preexec_fn keeps the
# agent's own process, which has threads, from running Python code between fork and exec.)
_RUNNER = """\
import os, resource, sys
cpu, mem, fsize, nofile, fd = (int(a) for a in sys.argv[1:6])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
report = os.fdopen(fd, "w", encoding="utf-8", errors="replace")
code = sys.stdin.read()
sys.stdin = open(os.devnull)
del cpu, mem, fsize, nofile, fd
try:
    exec(compile(code, "<python_repl_tool>", "exec"), {"__name__": "__main__"})
except BaseException as e:
    sys.stdout.flush()
    report.write(repr(e))
    report.flush()
    os._exit(1)
"""


@dataclass
class _Captured:
    data: bytearray
    dropped: int = 0


async def _drain(stream: asyncio.StreamReader, keep: int) -> _Captured:
    """Read a stream to its end, keeping the first ``keep`` bytes (never blocks the writer)."""
    out = _Captured(bytearray())
    while chunk := await stream.read(65536):
        room = keep - len(out.data)
        if room > 0:
            out.data += chunk[:room]
        out.dropped += max(0, len(chunk) - max(room, 0))
    return out


async def _capture(pipe: IO[bytes] | None, keep: int) -> _Captured:
    """Capture one of the snippet's output pipes on the running loop."""
    if pipe is None:
        return _Captured(bytearray())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 16)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await _drain(reader, keep)
    finally:
        transport.close()


async def _exited(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the process to end without a thread: its pidfd turns readable then."""
    if proc.poll() is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(proc.pid)
    ended = loop.create_future()

    def exited() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()


def _read_available(fd: int) -> str:
    """What the snippet's interpreter wrote to the report pipe before it exited. Non-blocking:
    a grandchild that escaped the process group may still hold the pipe open."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        data = b""
    return data.decode(errors="replace")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_error(code: int, limits: PythonLimits) -> str | None:
    if code >= 0:
        return None
    sig = -code
    if sig == signal.SIGXCPU:
        return f"the code used its {limits.cpu_s} s of CPU time and was killed (SIGXCPU)"
    if sig == signal.SIGKILL:
        return "the code was killed (SIGKILL; out of memory?)"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"the code was killed by {name}"


def _parse(payload: bytes) -> tuple[str, float | None]:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise FatalError('python: the payload must be JSON {"code": "..."}') from None
    if not isinstance(doc, dict) or not isinstance(doc.get("code"), str):
        raise FatalError("python: payload field 'code' must be a string of Python source")
    code = doc["code"]
    if len(code) > MAX_CODE_CHARS:
        raise FatalError(
            f"python: payload field 'code' has {len(code)} characters, more than {MAX_CODE_CHARS}"
        )
    timeout = doc.get("timeout_s")
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise FatalError(
                f"python: payload field 'timeout_s' must be a finite number > 0, got {timeout!r}"
            )
        timeout = float(timeout)
    return code, timeout


def _write_source(workdir: str, code: str) -> None:
    with open(os.path.join(workdir, SOURCE_NAME), "w", encoding="utf-8") as f:
        f.write(code)


def _spawn(workdir: str, limits: PythonLimits, report_w: int) -> subprocess.Popen[bytes]:
    """Start the snippet's interpreter. subprocess (not the event loop's subprocess support):
    uvloop's spawn runs the interpreter's fork hooks in the child, and with gRPC threads busy
    in the agent that child can crash before it execs; subprocess runs none without a
    preexec_fn."""
    with open(os.path.join(workdir, SOURCE_NAME), "rb") as source:
        return subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _RUNNER,
                str(limits.cpu_s),
                str(limits.memory_mb << 20),
                str(limits.file_mb << 20),
                str(limits.open_files),
                str(report_w),
            ],
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env={"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir},
            start_new_session=True,
            pass_fds=(report_w,),
        )


async def run_python(code: str, limits: PythonLimits, wall_s: float) -> dict[str, Any]:
    """Run ``code`` under ``limits`` for at most ``wall_s`` seconds; the result document.
    Cancelling the caller kills the snippet's process group."""
    keep = limits.output_kb * 1024
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deerflow-python-") as workdir:
        _write_source(workdir, code)  # a few KB on local disk: not worth a thread
        report_r, report_w = os.pipe()
        try:
            proc = _spawn(workdir, limits, report_w)
        except BaseException:
            os.close(report_r)
            raise
        finally:
            os.close(report_w)
        try:
            out, err, timed_out = await _supervise(proc, keep, max(MIN_RUN_S, wall_s))
        finally:
            _kill_group(proc.pid)  # children the snippet left behind, or all of it if cancelled
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)  # SIGKILLed: reaped within milliseconds
            raised = _read_available(report_r)
            os.close(report_r)
        exit_code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    if timed_out:
        error: str | None = (
            f"TimeoutError('the code ran longer than {wall_s:.3g} s and was killed')"
        )
    else:
        error = raised or _signal_error(exit_code, limits)
        if error is None and exit_code != 0:
            error = f"the code's interpreter exited with status {exit_code}"
    return {
        "stdout": out.data.decode(errors="replace"),
        "stderr": err.data.decode(errors="replace"),
        "error": error,
        "exit_code": exit_code,
        "timed_out": timed_out,
        "truncated": bool(out.dropped or err.dropped),
        "duration_s": round(time.monotonic() - started, 3),
    }


async def _supervise(
    proc: subprocess.Popen[bytes], keep: int, wall_s: float
) -> tuple[_Captured, _Captured, bool]:
    """Capture the snippet's output while it runs and wait for it at most ``wall_s``; then kill
    its process group. Returns the captured stdout and stderr (what it printed before a
    timeout included) and whether it timed out."""
    readers = [
        asyncio.ensure_future(_capture(proc.stdout, keep)),
        asyncio.ensure_future(_capture(proc.stderr, keep)),
    ]
    timed_out = False
    try:
        await asyncio.wait_for(_exited(proc), timeout=wall_s)
    except TimeoutError:
        timed_out = True
    except BaseException:
        for reader in readers:
            reader.cancel()
        raise
    _kill_group(proc.pid)
    await _exited(proc)
    # The pipes close once the group is dead; a grandchild that left the group could hold
    # them open, so the reading is bounded too.
    done, pending = await asyncio.wait(readers, timeout=1.0)
    for reader in pending:
        reader.cancel()
    out, err = (r.result() if r in done else _Captured(bytearray()) for r in readers)
    return out, err, timed_out


async def _python(ctx: TaskContext, payload: bytes) -> bytes:
    code, asked = _parse(payload)
    limits = PythonLimits.from_env()
    wall = min(limits.timeout_s, ctx.time_left() - REPORT_MARGIN_S)
    if asked is not None:
        wall = min(wall, asked)
    result = await run_python(code, limits, wall)
    result["limits"] = asdict(limits)
    return json.dumps(result).encode()


python = Handler(
    "python",
    _python,
    HandlerKind.IO,
    description='Run a Python snippet {"code", "timeout_s"?} in a limited subprocess (opt-in).',
    default_duration_s=1.0,
)
"""Install with ``deerflow-agent --handler deerflow_dropins.handlers:python`` (opt-in)."""
