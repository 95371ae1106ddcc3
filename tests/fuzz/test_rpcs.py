"""Fuzzing JobService and AdminService with valid-looking messages, against one running
controller with a real agent and good jobs flowing (issue #17, deliver 4).

Every call answers within the deadline with an allowed status and a bounded sentence; after
every example the controller is the same live process, within its RSS bound, with no traceback
in its log, and the probe's good jobs all ended exactly once with the right output; at the end
of each test a good job submitted after the fuzzing still completes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deerflow_protos import admin_pb2, client_pb2

from . import calls
from .calls import ADMIN, JOBS
from .conftest import InputCount
from .strategies import (
    HUGE_JOBS,
    WIDE_LABELS,
    cancel_requests,
    drain_requests,
    get_job_requests,
    get_task_requests,
    huge_job,
    job_detail_requests,
    list_agents_requests,
    list_jobs_requests,
    submit_requests,
    watch_requests,
)
from .target import FuzzTarget

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # `inputs` counts across the examples on purpose
    ],
)
"""Deterministic (the same inputs on every run), no per-example deadline (the calls have
theirs), nothing remembered between runs."""

job_picks = st.one_of(st.none(), st.integers(0, 10_000))
"""None: keep the fuzzed job id; a number: use the id of a job that is done here."""


@pytest.fixture(scope="module")
def ch(target: FuzzTarget) -> Iterator[grpc.Channel]:
    with calls.channel(target.address) as channel:
        yield channel


def _cancel_accepted(target: FuzzTarget, ch: grpc.Channel, answer: calls.Answer) -> None:
    """A fuzzed job the controller accepted is cancelled at once (so it is done, and its
    tasks leave the agent's slots to the good jobs)."""
    if answer.code != grpc.StatusCode.OK:
        return
    reply = client_pb2.SubmitJobResponse.FromString(answer.replies[0])
    if reply.duplicate:
        return
    cancel = client_pb2.CancelJobRequest(job_id=reply.job_id, reason="fuzzed")
    assert calls.unary(ch, JOBS + "CancelJob", cancel.SerializeToString()).code == (
        grpc.StatusCode.OK
    )
    target.fuzz_jobs.append(reply.job_id)


@settings(FUZZ, max_examples=120)
@given(request=submit_requests, pick=job_picks)
def test_every_submitted_job_gets_a_status_and_good_jobs_keep_completing(
    target: FuzzTarget,
    ch: grpc.Channel,
    inputs: InputCount,
    request: client_pb2.SubmitJobRequest,
    pick: int | None,
) -> None:
    if pick is not None:
        request.job_id = target.done_job(pick)  # idempotent resubmit, or ALREADY_EXISTS
    answer = calls.unary(ch, JOBS + "SubmitJob", request.SerializeToString())
    inputs.n += 1
    _cancel_accepted(target, ch, answer)
    target.check()


def test_a_refused_request_is_freed_when_its_call_ends(
    target: FuzzTarget, ch: grpc.Channel, inputs: InputCount
) -> None:
    """Found by this suite: gRPC keeps a refused call's AbortError, whose traceback (and the
    JobRejected it was raised during) holds the frames that hold the request, in a cycle only
    the rarely run cyclic collector frees; 8 refusals of 2.6 MB requests (200,000 labels) grew
    the controller by 330 MB. Now each is freed when its call ends (service/malformed.py)."""
    body = huge_job(WIDE_LABELS)
    calls.unary(ch, JOBS + "SubmitJob", body, timeout_s=30)  # the allocator's first high-water
    before = target.rss()
    for _ in range(8):
        answer = calls.unary(ch, JOBS + "SubmitJob", body, timeout_s=30)
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "200000 labels, over the limit of 64" in answer.details
        inputs.n += 1
    grown = target.rss() - before
    assert grown < 100 << 20, f"8 refused requests left {grown >> 20} MiB behind"
    target.check()


@settings(FUZZ, max_examples=len(HUGE_JOBS))
@given(which=st.sampled_from(range(len(HUGE_JOBS))))
def test_huge_repeated_fields_within_the_message_limit_get_a_status(
    target: FuzzTarget, ch: grpc.Channel, inputs: InputCount, which: int
) -> None:
    answer = calls.unary(ch, JOBS + "SubmitJob", huge_job(which), timeout_s=30)
    inputs.n += 1
    _cancel_accepted(target, ch, answer)
    target.check()


def test_good_jobs_complete_after_the_submit_fuzzing(target: FuzzTarget) -> None:
    target.check_serving()


@settings(FUZZ, max_examples=100)
@given(
    kind=st.sampled_from(["WatchJob", "CancelJob", "GetJob", "GetTask"]),
    watch=watch_requests,
    cancel=cancel_requests,
    get_job=get_job_requests,
    get_task=get_task_requests,
    pick=job_picks,
)
def test_watch_cancel_and_get_answer_every_request_with_a_status(
    target: FuzzTarget,
    ch: grpc.Channel,
    inputs: InputCount,
    kind: str,
    watch: client_pb2.WatchJobRequest,
    cancel: client_pb2.CancelJobRequest,
    get_job: client_pb2.GetJobRequest,
    get_task: client_pb2.GetTaskRequest,
    pick: int | None,
) -> None:
    request = {"WatchJob": watch, "CancelJob": cancel, "GetJob": get_job, "GetTask": get_task}
    chosen: Any = request[kind]  # each has a job_id
    if pick is not None:
        chosen.job_id = target.done_job(pick)
    body = chosen.SerializeToString()
    if kind == "WatchJob":
        # A job that is done: its stream replays from after_seq and ends OK.
        calls.server_stream(ch, JOBS + kind, body)
    else:
        calls.unary(ch, JOBS + kind, body, timeout_s=30)
    inputs.n += 1
    target.check()


@settings(FUZZ, max_examples=60)
@given(
    kind=st.sampled_from(["GetStats", "ListAgents", "DrainAgent", "ListJobs", "GetJob"]),
    drain=drain_requests,
    list_agents=list_agents_requests,
    list_jobs=list_jobs_requests,
    job_detail=job_detail_requests,
)
def test_admin_calls_answer_every_request_with_a_status(
    target: FuzzTarget,
    ch: grpc.Channel,
    inputs: InputCount,
    kind: str,
    drain: admin_pb2.DrainAgentRequest,
    list_agents: admin_pb2.ListAgentsRequest,
    list_jobs: admin_pb2.ListJobsRequest,
    job_detail: admin_pb2.GetJobDetailRequest,
) -> None:
    if kind == "ListAgents" and list_agents.wait_for > 1:
        # Documented to block until that many agents are connected or the deadline passes.
        body = list_agents.SerializeToString()
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(ADMIN + kind)(body, timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        request = {
            "GetStats": admin_pb2.GetStatsRequest(),
            "ListAgents": list_agents,
            "DrainAgent": drain,
            "ListJobs": list_jobs,
            "GetJob": job_detail,
        }[kind]
        calls.unary(ch, ADMIN + kind, request.SerializeToString())
    inputs.n += 1
    target.check()


def test_good_jobs_complete_after_the_fuzzing(target: FuzzTarget) -> None:
    target.check_serving()
