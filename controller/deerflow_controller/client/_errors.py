"""Typed errors of the client SDK. Each carries the gRPC status code and a sentence a person can
act on (the controller's own message where it sent one)."""

from __future__ import annotations

import grpc


class DeerflowError(Exception):
    """Base of every error the SDK raises. ``code`` is the gRPC status (None for task errors)."""

    code: grpc.StatusCode | None = None

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidJobError(DeerflowError):
    """The controller refused the job as submitted (INVALID_ARGUMENT); nothing was accepted."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLargeError(DeerflowError):
    """A configured limit was reached (RESOURCE_EXHAUSTED): a payload or the job is too large,
    or the controller holds as much unfinished work or as many WatchJob streams as it allows;
    the message says which, and whether retrying later helps ("retry when some finish")."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFoundError(DeerflowError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(DeerflowError):
    code = grpc.StatusCode.ALREADY_EXISTS


class UnavailableError(DeerflowError):
    """The controller could not be reached (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(DeerflowError, TimeoutError):
    """The call's deadline passed before the controller answered (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class TaskFailedError(DeerflowError):
    """A task ended without success; raised when its result is unwrapped."""

    def __init__(self, job_id: str, task_id: str, state: str, kind: str, message: str) -> None:
        super().__init__(f"task {task_id!r} of job {job_id!r} ended {state} ({kind}): {message}")
        self.job_id = job_id
        self.task_id = task_id
        self.state = state
        self.kind = kind
        self.reason = message


_BY_CODE: dict[grpc.StatusCode, type[DeerflowError]] = {
    cls.code: cls
    for cls in (
        InvalidJobError,
        PayloadTooLargeError,
        NotFoundError,
        AlreadyExistsError,
        UnavailableError,
        DeadlineExceededError,
    )
    if cls.code is not None
}


def from_rpc_error(error: grpc.aio.AioRpcError, address: str) -> DeerflowError:
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and "http1.x server" in details:
        # gRPC core's words for an HTTP/1 answer, e.g. from the controller's dashboard port.
        details = (
            f"{address} answers HTTP/1, not gRPC: is it the controller's --http-port? "
            "Point the client at its gRPC --port"
        )
    elif code == grpc.StatusCode.UNAVAILABLE:
        details = (
            f"cannot reach the controller at {address} ({details}); "
            "is deerflow-controller running there?"
        )
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"the controller at {address} did not answer within the call's deadline"
    cls = _BY_CODE.get(code, DeerflowError)
    return cls(details or code.name, code)
