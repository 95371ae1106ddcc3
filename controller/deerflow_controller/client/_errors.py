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


class ResourceExhaustedError(DeerflowError):
    """A configured limit was reached (RESOURCE_EXHAUSTED): a payload or the job is too large,
    or the controller holds as much unfinished work or as many WatchJob streams as it allows;
    the message says which, and whether retrying later helps ("retry when some finish")."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


PayloadTooLargeError = ResourceExhaustedError
"""The name this error had while the only limit was a payload's size; kept for callers."""


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


class AuthenticationError(DeerflowError):
    """The controller needs a token and got none, or one it does not know (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(DeerflowError):
    """The token is valid but lacks the role the call needs (PERMISSION_DENIED), or a task
    names another tenant."""

    code = grpc.StatusCode.PERMISSION_DENIED


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
        ResourceExhaustedError,
        NotFoundError,
        AlreadyExistsError,
        UnavailableError,
        DeadlineExceededError,
        AuthenticationError,
        PermissionDeniedError,
    )
    if cls.code is not None
}


_TLS_ADVICE = {
    "WRONG_VERSION_NUMBER": "it does not serve TLS: drop the client's --tls-* settings, or "
    "start the controller with --tls-cert/--tls-key",
    "CERTIFICATE_VERIFY_FAILED": "its certificate is not signed by the client's --tls-ca "
    "(DEERFLOW_TLS_CA), or has expired",
}


def _tls_reason(details: str) -> str:
    """The OpenSSL reason in gRPC's handshake message (e.g. CERTIFICATE_VERIFY_FAILED)."""
    for reason in _TLS_ADVICE:
        if reason in details:
            return reason
    return details.rsplit(":", 2)[-2].strip()[:120] if details.count(":") >= 2 else details[:120]


def from_rpc_error(error: grpc.aio.AioRpcError, address: str) -> DeerflowError:
    return from_status(error.code(), error.details() or "", address)


def from_status(code: grpc.StatusCode, details: str, address: str) -> DeerflowError:
    """The SDK's error for a call (or a Session's call) that ended with ``code`` and
    ``details`` from the controller at ``address``."""
    if code == grpc.StatusCode.UNAVAILABLE and "http1.x server" in details:
        # gRPC core's words for an HTTP/1 answer, e.g. from the controller's dashboard port.
        details = (
            f"{address} answers HTTP/1, not gRPC: is it the controller's --http-port? "
            "Point the client at its gRPC --port"
        )
    elif code == grpc.StatusCode.UNAVAILABLE and "handshake" in details.lower():
        # gRPC core's words: "Tls handshake failed (TSI_PROTOCOL_FAILURE): ...: <reason>: ..."
        reason = _tls_reason(details)
        details = (
            f"the TLS handshake with the controller at {address} failed ({reason}): "
            + _TLS_ADVICE.get(reason, "check the client's --tls-ca (DEERFLOW_TLS_CA)")
        )
    elif code == grpc.StatusCode.UNAVAILABLE and details.endswith("Socket closed"):
        details = (
            f"the controller at {address} closed the connection at once: if it serves TLS, give "
            "the client its CA (--tls-ca, DEERFLOW_TLS_CA or tls=TlsFiles(ca=...)) and, under "
            "mutual TLS, a client certificate (--tls-cert/--tls-key); else is "
            "deerflow-controller running there?"
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
