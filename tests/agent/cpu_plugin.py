"""Module-level cpu handlers for the tests (the process pool imports them by name)."""

from __future__ import annotations

from deerflow_agent import ErrorClass, HandlerError, handler


@handler(kind="cpu")
def burn(payload: bytes) -> bytes:
    """Hash the payload many times: enough CPU time for the clock to see."""
    import hashlib

    digest = payload
    for _ in range(20_000):
        digest = hashlib.sha256(digest).digest()
    block = bytearray(8 << 20)  # touch 8 MiB so the worker's peak RSS is at least that
    return digest + bytes(block[:1])


@handler(kind="cpu")
def overloaded(payload: bytes) -> bytes:
    """Fail the way a provider's 429 fails, from inside a pool worker."""
    raise HandlerError("over the limit", retry_after_s=2, error_class=ErrorClass.RATE_LIMITED)
