"""The refusal a servicer's logic raises instead of aborting the call itself, so that the same
logic serves a unary call (which aborts with it) and one call of a Session stream (which ends
only that call with it)."""

from __future__ import annotations

import grpc


class Refused(Exception):
    """End the call (or one call of a Session) with ``code`` and the sentence ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
