"""How a handler reports failure: :class:`HandlerError` (may succeed if tried again) and
:class:`FatalError` (never will). Both survive pickling with their keyword arguments, since cpu
handlers raise them in a pool worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deerflow_common.errors import ErrorClass

__all__ = ["FatalError", "HandlerError"]


class HandlerError(Exception):
    """The attempt failed but the task may succeed if tried again (a 503, a reset connection).

    ``retry_after_s`` is how long the provider asked us to wait (a Retry-After header), 0 when it
    said nothing; the controller never retries sooner. ``retryable=False`` makes it permanent,
    like :class:`FatalError`. ``metadata`` carries the provider's signals for the failed attempt
    (keys from :mod:`deerflow_common.signals`: HTTP status, rate-limit headers, error code) into
    ``Result.metadata``, so the controller's limiter learns from a 429 as it does from a 200.
    ``error_class`` tells the controller's recovery policy which budget the retry draws on
    (``RATE_LIMITED`` for a 429, ``TRANSIENT`` for a 503, ...); UNSPECIFIED (the default) lets
    the controller classify from the kind and the signals.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float = 0.0,
        metadata: Mapping[str, str] | None = None,
        error_class: ErrorClass = ErrorClass.UNSPECIFIED,
    ):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = max(0.0, float(retry_after_s))
        self.metadata: dict[str, str] = dict(metadata or {})
        self.error_class = ErrorClass(error_class)

    def __reduce__(self) -> tuple[Any, ...]:
        # CPU handlers raise this in a pool worker: keep the keyword arguments across pickling.
        return (
            _rebuild_handler_error,
            (
                self.message,
                self.retryable,
                self.retry_after_s,
                self.metadata,
                int(self.error_class),
            ),
        )


def _rebuild_handler_error(
    message: str,
    retryable: bool,
    retry_after_s: float,
    metadata: dict[str, str] | None = None,
    error_class: int = 0,
) -> HandlerError:
    return HandlerError(
        message,
        retryable=retryable,
        retry_after_s=retry_after_s,
        metadata=metadata,
        error_class=ErrorClass(error_class),
    )


class FatalError(Exception):
    """The task cannot succeed however often it is tried (bad input, 404, a rejected API key):
    never retried. ``metadata`` is reported with the failure, as for :class:`HandlerError`.
    ``error_class`` refines it for the controller: ``FATAL`` (the default meaning: quota,
    billing, authentication, a bad request) or ``SOFT`` (a content-safety rejection: not
    retried, but no sign that the provider or the agent is failing, so no circuit breaker
    counts it)."""

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        error_class: ErrorClass = ErrorClass.UNSPECIFIED,
    ):
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.error_class = ErrorClass(error_class)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_fatal_error, (self.message, self.metadata, int(self.error_class)))


def _rebuild_fatal_error(
    message: str, metadata: dict[str, str] | None = None, error_class: int = 0
) -> FatalError:
    return FatalError(message, metadata=metadata, error_class=ErrorClass(error_class))
