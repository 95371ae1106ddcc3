"""Fuzzing every RPC with raw bytes (issue #17, deliver 4): bytes that do not parse as the
method's request, truncated valid-looking messages, and bytes that happen to parse, sent through
a generic channel method with no serializers, against one running controller with a real agent
and good jobs flowing. Each call answers within the deadline with an allowed status (never
UNKNOWN: a request that does not parse is INVALID_ARGUMENT), and the controller stays the same
live process within its RSS bound, with no traceback in its log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deerflow_protos import admin_pb2, agent_pb2, client_pb2

from . import calls
from .calls import ADMIN, AGENTS, BIDI_STREAMS, JOBS, SERVER_STREAMS, UNARY
from .conftest import InputCount
from .strategies import hellos, raw_bytes, submit_requests
from .target import AGENT_ID, FuzzTarget

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,  # `inputs` counts across the examples on purpose
    ],
)

METHODS = UNARY + SERVER_STREAMS + BIDI_STREAMS


def _truncated(body: bytes, cut: int) -> bytes:
    return body[: cut % (len(body) + 1)]


bodies = st.one_of(
    raw_bytes,
    st.builds(_truncated, submit_requests.map(lambda m: m.SerializeToString()), st.integers()),
    st.builds(
        _truncated,
        hellos.map(lambda h: agent_pb2.AgentMessage(hello=h).SerializeToString()),
        st.integers(),
    ),
)


@pytest.fixture(scope="module")
def ch(target: FuzzTarget) -> Iterator[grpc.Channel]:
    with calls.channel(target.address) as channel:
        yield channel


M = TypeVar("M", bound=Message)


def _parses(message: type[M], body: bytes) -> M | None:
    try:
        return message.FromString(body)
    except Exception:
        return None


@settings(FUZZ, max_examples=200)
@given(method=st.sampled_from(METHODS), body=bodies, more=st.lists(bodies, max_size=3))
def test_raw_bytes_to_every_method_get_a_status(
    target: FuzzTarget,
    ch: grpc.Channel,
    inputs: InputCount,
    method: str,
    body: bytes,
    more: list[bytes],
) -> None:
    drain = _parses(admin_pb2.DrainAgentRequest, body)
    assume(not (method == ADMIN + "DrainAgent" and drain and drain.agent_id == AGENT_ID))
    first = _parses(agent_pb2.AgentMessage, body)
    assume(not (method == AGENTS + "Connect" and first and first.hello.agent_id == AGENT_ID))
    listing = _parses(admin_pb2.ListAgentsRequest, body)
    if method == ADMIN + "ListAgents" and listing and listing.wait_for > 1:
        # Documented to wait for that many agents until the deadline (one is connected).
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(method)(body, timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    elif method in UNARY:
        answer = calls.unary(ch, method, body)
        if method == JOBS + "SubmitJob" and answer.code == grpc.StatusCode.OK:
            job_id = client_pb2.SubmitJobResponse.FromString(answer.replies[0]).job_id
            cancel = client_pb2.CancelJobRequest(job_id=job_id).SerializeToString()
            assert calls.unary(ch, JOBS + "CancelJob", cancel).code == grpc.StatusCode.OK
            target.fuzz_jobs.append(job_id)
    elif method in SERVER_STREAMS:
        calls.server_stream(ch, method, body)
    else:
        calls.bidi_stream(ch, method, [body, *more])
    inputs.n += 1
    target.check()


def test_good_jobs_complete_after_the_raw_bytes(target: FuzzTarget) -> None:
    target.check_serving()
