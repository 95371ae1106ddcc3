"""Fetching an input sent by reference (``AgentService.FetchInput``) from the controller whose
stream assigned the attempt, in chunks, checked against the size and SHA-256 it was assigned
with. Any failure is a retryable :class:`HandlerError`: the attempt fails, and the controller
runs it again with the inputs again (or knows the task ended)."""

from __future__ import annotations

import asyncio
import hashlib

import grpc

from deerflow_common.errors import AttemptKey
from deerflow_protos import agent_pb2, agent_pb2_grpc

from ._errors import HandlerError
from ._inputs import InputRef

__all__ = ["fetch_input"]


async def fetch_input(
    channel: grpc.aio.Channel | None,
    address: str,
    key: AttemptKey,
    ref: InputRef,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    who: tuple[str, str] = ("", ""),
) -> bytes:
    """The bytes of ``ref`` for attempt ``key`` from the controller at ``address`` over
    ``channel`` (None: the stream is down), asked as ``who`` (the agent id and the instance its
    Hello sent: the controller serves only the agent holding the attempt). Blocks until they
    all arrived; cancelled with the attempt (its timeout included)."""
    where = f"input {ref.task_id!r} ({ref.size} bytes)"
    if channel is None:
        raise HandlerError(f"cannot fetch {where}: the stream to the controller is down")
    job_id, task_id, attempt = key
    request = agent_pb2.FetchInputRequest(
        ref=agent_pb2.AttemptRef(job_id=job_id, task_id=task_id, attempt=attempt),
        task_id=ref.task_id,
        agent_id=who[0],
        instance=who[1],
    )
    chunks: list[bytes] = []
    received = 0
    digest = hashlib.sha256()
    try:
        async for chunk in agent_pb2_grpc.AgentServiceStub(channel).FetchInput(
            request, metadata=metadata
        ):
            data = chunk.data
            received += len(data)
            if received > ref.size:
                raise HandlerError(
                    f"{where} from {address} came longer than assigned; the attempt is retried"
                )
            chunks.append(data)
            # hashlib releases the GIL on large buffers: the loop runs other attempts meanwhile.
            await asyncio.to_thread(digest.update, data)
    except grpc.aio.AioRpcError as exc:
        raise HandlerError(
            f"could not fetch {where} from {address}: {exc.code().name}: {exc.details()}"
        ) from None
    except grpc.aio.BaseError as exc:  # the channel closed under the call (the stream broke)
        raise HandlerError(f"could not fetch {where} from {address}: {exc!r}") from None
    if received != ref.size or digest.hexdigest() != ref.sha256:
        raise HandlerError(
            f"{where} from {address} arrived with {received} bytes or a SHA-256 other than "
            "assigned; the attempt is retried"
        )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
