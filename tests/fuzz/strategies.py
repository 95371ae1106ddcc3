"""Hypothesis strategies for the controller's request messages: valid-looking ones with boundary
values (NaN, infinities, huge floats; empty, over-long, unprintable names; deep JSON; huge
repeated fields, cheap to build; cycles, unknown dependencies and handlers, duplicate ids) and
raw bytes that may or may not parse.

Huge messages are built once and drawn from a small set (``st.sampled_from``), so an example
costs a call, not the building of a 20 MB message."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from hypothesis import strategies as st

from deerflow_protos import admin_pb2, agent_pb2, client_pb2, common_pb2

from .target import AGENT_ID

# ----------------------------------------------------------------------------- scalars

BOUNDARY_FLOATS = [
    0.0, -0.0, 1e-300, 5e-324, -1.0, 0.5, 1.0, 86_400.0 * 7, 86_400.0 * 7 + 1, 1e9, 1.7e308,
    -1.7e308, math.nan, -math.nan, math.inf, -math.inf,
]  # fmt: skip
floats = st.one_of(st.sampled_from(BOUNDARY_FLOATS), st.floats())
"""Any double: the boundaries above, NaN and infinities included, or any other."""

INT32 = (-(2**31), 2**31 - 1)
int32s = st.one_of(
    st.sampled_from([0, 1, -1, 1_000_000, 1_000_001, -1_000_001, *INT32]), st.integers(*INT32)
)
uint64s = st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))

ODD_NAMES = [
    "", " ", "x" * 256, "é" * 128, "x" * 257, "é" * 129, "x" * 100_000, "line\nbreak", "nul\x00",
    "bell\x07", "del\x7f", "tab\t", "\u2028", "\u202e-rtl", "zero\u200bwidth", "🦌" * 64,
    "🦌" * 65, "../../etc/passwd", "' OR 1=1 --", "%s%n", "${jndi:x}", "\ufeff",
]  # fmt: skip
names = st.one_of(
    st.sampled_from(ODD_NAMES),
    st.text(max_size=24),
    st.text(alphabet="abcdefgh-_/.:", min_size=1, max_size=12),
)
"""Names as a submitter might send them: printable and short, or at and past every bound."""

# ----------------------------------------------------------------------------- payloads

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), floats, st.text(max_size=16)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _json_bytes(doc: object) -> bytes:
    import json

    return json.dumps(doc, allow_nan=True).encode()


@functools.cache
def _deep(depth: int, field: str = "items") -> bytes:
    """``{"items": [[[...]]]}`` ``depth`` deep (issue #17 finding 2)."""
    return b'{"' + field.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"


payloads = st.one_of(
    st.binary(max_size=64),
    _json.map(_json_bytes),
    st.builds(
        lambda items, per: _json_bytes({"items": items, "per_item_s": per, "seconds": per}),
        st.lists(_json, max_size=6),
        floats,
    ),
    st.sampled_from([10, 999, 1000, 1001, 30_000, 100_000]).map(_deep),
    st.sampled_from([1 << 20, (1 << 20) + 1]).map(lambda n: b"x" * n),
)

# ----------------------------------------------------------------------------- JobService

HANDLERS = ["echo", "work", "sleep", "cpu", "nope", "ECHO", "echo "]
"""Handlers a fuzzed task names: the agent's (not http and the providers, which would reach
out of the machine), unknown ones, and near misses."""

_task_ids = st.one_of(st.sampled_from(["a", "b", "c", "d", "e"]), names)
"""A small pool first, so duplicates, cycles and self-dependencies come up often."""

_string_maps = st.dictionaries(names, names, max_size=4)


@st.composite
def task_specs(draw: st.DrawFn) -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(
        id=draw(_task_ids),
        handler=draw(st.one_of(st.sampled_from(HANDLERS), names)),
        payload=draw(payloads),
        priority=draw(int32s),
        depends_on=draw(st.lists(_task_ids, max_size=4)),
        timeout_s=draw(floats),
        max_retries=draw(int32s),
        labels=draw(_string_maps),
        schedule_to_start_s=draw(floats),
        heartbeat_timeout_s=draw(floats),
        trace_context=draw(_string_maps),
        rate_keys=draw(st.lists(names, max_size=3)),
        est_tokens=draw(floats),
        tenant=draw(names),
        # proto3 enums are open: unknown values travel
        cache=draw(st.integers(-1, 5)),  # type: ignore[arg-type]
        split=draw(st.integers(-1, 3)),  # type: ignore[arg-type]
        partial_results=draw(st.booleans()),
        est_duration_s=draw(floats),
        schedule_to_close_s=draw(floats),
        inputs_all=draw(st.booleans()),
        inputs=draw(st.lists(_task_ids, max_size=3)),
    )
    return spec


def _huge_jobs() -> list[Callable[[], client_pb2.SubmitJobRequest]]:
    """Requests with huge repeated fields, each well under 64 MiB."""

    def many_tasks() -> client_pb2.SubmitJobRequest:
        return client_pb2.SubmitJobRequest(
            tasks=[common_pb2.TaskSpec(id=f"t{i}", handler="nope") for i in range(20_000)]
        )

    def long_chain() -> client_pb2.SubmitJobRequest:
        n = 5_000
        return client_pb2.SubmitJobRequest(
            tasks=[
                common_pb2.TaskSpec(id=f"t{i}", handler="nope", depends_on=[f"t{i + 1}"])
                for i in range(n - 1)
            ]
            + [common_pb2.TaskSpec(id=f"t{n - 1}", handler="nope", depends_on=["t0"])]
        )

    def wide_task(field: str) -> Callable[[], client_pb2.SubmitJobRequest]:
        def build() -> client_pb2.SubmitJobRequest:
            spec = common_pb2.TaskSpec(id="w", handler="echo")
            many = [f"k{i}" for i in range(200_000)]
            if field in ("labels", "trace_context"):
                getattr(spec, field).update(dict.fromkeys(many, "v"))
            else:
                getattr(spec, field).extend(many)
            return client_pb2.SubmitJobRequest(tasks=[spec])

        return build

    def wide_job_trace() -> client_pb2.SubmitJobRequest:
        req = client_pb2.SubmitJobRequest(tasks=[common_pb2.TaskSpec(id="a", handler="echo")])
        req.trace_context.update({f"k{i}": "v" * 64 for i in range(100_000)})
        return req

    return [
        many_tasks,
        long_chain,
        wide_task("depends_on"),
        wide_task("rate_keys"),
        wide_task("inputs"),
        wide_task("labels"),
        wide_task("trace_context"),
        wide_job_trace,
    ]


HUGE_JOBS = _huge_jobs()
WIDE_LABELS = 5
"""The index in HUGE_JOBS of one task with 200,000 labels (2.6 MB)."""


@functools.cache
def huge_job(i: int) -> bytes:
    return HUGE_JOBS[i]().SerializeToString()


submit_requests = st.builds(
    client_pb2.SubmitJobRequest,
    job_id=st.one_of(st.just(""), names),
    tasks=st.lists(task_specs(), max_size=6),
    name=names,
    trace_context=_string_maps,
    deadline_s=floats,
    accepted_at=floats,
)


watch_requests = st.builds(
    client_pb2.WatchJobRequest, job_id=names, after_seq=uint64s, filter=st.integers(-1, 3)
)


@functools.cache
def _many_ids(n: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(n))


cancel_requests = st.builds(
    client_pb2.CancelJobRequest,
    job_id=names,
    task_ids=st.one_of(
        st.lists(_task_ids, max_size=6), st.sampled_from([100_001, 1_000_000]).map(_many_ids)
    ),
    reason=names,
)
get_job_requests = st.builds(client_pb2.GetJobRequest, job_id=names)
get_task_requests = st.builds(client_pb2.GetTaskRequest, job_id=names, task_id=_task_ids)

# ----------------------------------------------------------------------------- AdminService

drain_requests = st.builds(
    admin_pb2.DrainAgentRequest, agent_id=names.filter(lambda n: n != AGENT_ID)
)
list_agents_requests = st.builds(admin_pb2.ListAgentsRequest, wait_for=int32s)
list_jobs_requests = st.builds(
    admin_pb2.ListJobsRequest,
    limit=int32s,
    cursor=st.one_of(names, st.builds(lambda f, n: f"{f!r}:{n}", floats, names)),
    state=st.one_of(st.sampled_from(["", "RUNNING", "failed", "SUCCEEDED"]), names),
)
job_detail_requests = st.builds(
    admin_pb2.GetJobDetailRequest, job_id=names, task_limit=int32s, task_offset=int32s
)

# ----------------------------------------------------------------------------- AgentService

IMPOSTOR_HANDLERS = ["work", "sleep", "cpu", "nope"]
"""Handlers an impostor declares: never ``echo``, the probe's, whose tasks an impostor would
receive and could answer (issue #17 finding 3: no agent authentication yet)."""

refs = st.builds(agent_pb2.AttemptRef, job_id=names, task_id=_task_ids, attempt=int32s)

handler_infos = st.builds(
    agent_pb2.HandlerInfo,
    name=st.one_of(st.sampled_from(IMPOSTOR_HANDLERS), names.filter(lambda n: n != "echo")),
    kind=st.integers(-1, 3),
    slots=int32s,
    cacheable=st.booleans(),
    nondeterministic=st.booleans(),
    similarity_field=names,
    similarity_threshold=floats,
    cache_ttl_s=floats,
    items_field=st.one_of(st.just("items"), names),
    default_duration_s=floats,
    default_cpu_s=floats,
    default_memory_bytes=uint64s,
)

hellos = st.builds(
    agent_pb2.Hello,
    agent_id=names.filter(lambda n: n != AGENT_ID),
    token=names,
    handlers=st.lists(handler_infos, max_size=4),
    labels=_string_maps,
    slots=int32s,
    cpu_count=int32s,
    memory_bytes=uint64s,
    running=st.lists(refs, max_size=3),
    max_epoch_seen=st.one_of(st.just(0), uint64s),
    version=names,
)

heartbeats = st.builds(
    agent_pb2.Heartbeat,
    cpu_percent=floats,
    memory_percent=floats,
    running=int32s,
    free_slots=int32s,
    queued=int32s,
    handler_latency_s=st.dictionaries(names, floats, max_size=3),
    process_cpu_percent=floats,
)

task_errors = st.builds(
    common_pb2.TaskError,
    kind=st.integers(-1, 20),
    message=names,
    retryable=st.booleans(),
    retry_after_s=floats,
    error_class=st.integers(-1, 8),
)


def results(attempt_refs: st.SearchStrategy[agent_pb2.AttemptRef]) -> st.SearchStrategy[object]:
    return st.builds(
        agent_pb2.Result,
        ref=attempt_refs,
        ok=st.booleans(),
        output=st.binary(max_size=64),
        error=task_errors,
        started_at=floats,
        finished_at=floats,
        cancelled=st.booleans(),
        metadata=_string_maps,
        cpu_s=floats,
        rss_bytes=uint64s,
    )


def agent_messages(
    attempt_refs: st.SearchStrategy[agent_pb2.AttemptRef],
) -> st.SearchStrategy[agent_pb2.AgentMessage]:
    """Any message an agent may send after its Hello, with forged attempt refs."""
    return st.one_of(
        st.builds(agent_pb2.AgentMessage, hello=hellos),
        st.builds(agent_pb2.AgentMessage, heartbeat=heartbeats),
        st.builds(
            agent_pb2.AgentMessage,
            started=st.builds(
                agent_pb2.StartedBatch,
                started=st.lists(st.builds(agent_pb2.Started, ref=attempt_refs, time=floats)),
            ),
        ),
        st.builds(
            agent_pb2.AgentMessage,
            results=st.builds(
                agent_pb2.ResultBatch, results=st.lists(results(attempt_refs), max_size=4)
            ),
        ),
        st.builds(
            agent_pb2.AgentMessage,
            draining=st.builds(agent_pb2.Draining, not_started=st.lists(attempt_refs, max_size=4)),
        ),
        st.builds(
            agent_pb2.AgentMessage,
            progress=st.builds(
                agent_pb2.ProgressBatch,
                progress=st.lists(
                    st.builds(agent_pb2.Progress, ref=attempt_refs, fraction=floats, message=names),
                    max_size=4,
                ),
            ),
        ),
        st.just(agent_pb2.AgentMessage()),  # no oneof set
    )


fetch_requests = st.builds(agent_pb2.FetchInputRequest, ref=refs, task_id=_task_ids, offset=uint64s)

# ----------------------------------------------------------------------------- raw bytes

GARBAGE = [
    b"", b"\x00", b"\xff" * 5, b"\x0a\x02\xff\xfe", b"\x0a\xff\xff\xff\xff\x0f",
    b"\x12\x80\x80\x80\x80\x10", b"\x08" + b"\xff" * 10 + b"\x01", b"\x0b\x0c", b"\x0f",
    b"\x7a\x00", b"\xfa\xff\xff\xff\x0f\x00", b"\x12\x05\x0a\x03\x12\x01",
]  # fmt: skip
raw_bytes = st.one_of(st.sampled_from(GARBAGE), st.binary(max_size=256))
"""Bytes that rarely parse as the message they are sent as: truncated fields, bad wire types,
lengths past the end, invalid UTF-8 in strings, end-group tags, unknown fields."""
