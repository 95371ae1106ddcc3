"""The deerflow-parallel client SDK: what DeerFlow imports to run its parallel work.

    from deerflow_controller.client import Client, Task

    with Client("127.0.0.1:7400") as client:
        job = client.submit([Task("a", "echo", {"x": 1}), Task("b", "echo", depends_on=["a"])])
        for result in job.results():
            print(result.task_id, result.state, result.output)

Execution is at-least-once; each task's result is delivered exactly once per task id. Handlers
with side effects must be idempotent.
"""

# Clients
from deerflow_common.tls import TlsFiles
from deerflow_controller.client._async import DEFAULT_ADDRESS, AsyncClient

# Errors
from deerflow_controller.client._errors import (
    AlreadyExistsError,
    AuthenticationError,
    DeadlineExceededError,
    DeerflowError,
    InvalidJobError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TaskFailedError,
    UnavailableError,
)
from deerflow_controller.client._fork import FORKED_AFTER_GRPC
from deerflow_controller.client._handle import JobHandle
from deerflow_controller.client._sync import Client, SyncJobHandle

# Data
from deerflow_controller.client._types import (
    INPUTS_ALL,
    Task,
    TaskEvent,
    TaskResult,
    encode_payload,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "FORKED_AFTER_GRPC",
    "INPUTS_ALL",
    "AlreadyExistsError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "DeadlineExceededError",
    "DeerflowError",
    "InvalidJobError",
    "JobHandle",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SyncJobHandle",
    "Task",
    "TaskEvent",
    "TaskFailedError",
    "TaskResult",
    "TlsFiles",
    "UnavailableError",
    "encode_payload",
]
