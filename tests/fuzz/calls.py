"""Fuzzed calls as bytes on the wire: every method through a generic channel method with no
serializers, so valid-looking messages and raw bytes go the same way. Each returns the call's
:class:`Answer` after checking that it is an allowed status with a bounded sentence."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc

from .target import ALLOWED_CODES, CALL_DEADLINE_S

MAX_DETAILS_CHARS = 1024
"""The longest refusal sentence allowed: it cites a bounded prefix of the input, not all of it
(gRPC drops a status message over its metadata limit)."""

JOBS = "/deerflow.v1.JobService/"
ADMIN = "/deerflow.v1.AdminService/"
AGENTS = "/deerflow.v1.AgentService/"

UNARY = [
    JOBS + "SubmitJob",
    JOBS + "CancelJob",
    JOBS + "GetJob",
    JOBS + "GetTask",
    ADMIN + "GetStats",
    ADMIN + "ListAgents",
    ADMIN + "DrainAgent",
    ADMIN + "ListJobs",
    ADMIN + "GetJob",
]
SERVER_STREAMS = [JOBS + "WatchJob", AGENTS + "FetchInput"]
BIDI_STREAMS = [AGENTS + "Connect"]


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    replies: list[bytes]


def channel(address: str) -> grpc.Channel:
    """A channel that can send requests up to the controller's 64 MiB limit and read any
    reply."""
    return grpc.insecure_channel(
        address,
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )


def _checked(code: grpc.StatusCode, details: str, replies: list[bytes], what: str) -> Answer:
    assert code in ALLOWED_CODES, f"{what}: {code.name} {details[:300]!r}"
    if code != grpc.StatusCode.OK:
        assert details, f"{what}: {code.name} with no sentence"
        assert len(details) <= MAX_DETAILS_CHARS, f"{what}: {len(details)}-char sentence"
    return Answer(code, details, replies)


def unary(
    ch: grpc.Channel, method: str, body: bytes, *, timeout_s: float = CALL_DEADLINE_S
) -> Answer:
    call = ch.unary_unary(method)
    try:
        reply = call(body, timeout=timeout_s)
    except grpc.RpcError as e:
        return _checked(e.code(), e.details() or "", [], method)
    return _checked(grpc.StatusCode.OK, "", [reply], method)


def server_stream(
    ch: grpc.Channel, method: str, body: bytes, *, timeout_s: float = CALL_DEADLINE_S
) -> Answer:
    """Reads the whole stream: it must end, with a status, within ``timeout_s``."""
    call = ch.unary_stream(method)(body, timeout=timeout_s)
    return _drain(call, method)


def bidi_stream(
    ch: grpc.Channel, method: str, bodies: Iterable[bytes], *, timeout_s: float = CALL_DEADLINE_S
) -> Answer:
    """Sends ``bodies`` (an iterator runs in gRPC's sending thread) and closes the sending
    side; the call must end within ``timeout_s``."""
    call = ch.stream_stream(method)(iter(bodies), timeout=timeout_s)
    return _drain(call, method)


def _drain(call: Iterator[bytes], method: str) -> Answer:
    replies: list[bytes] = []
    try:
        for reply in call:
            replies.append(reply)
    except grpc.RpcError as e:
        return _checked(e.code(), e.details() or "", replies, method)
    return _checked(grpc.StatusCode.OK, "", replies, method)
