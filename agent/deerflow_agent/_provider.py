"""One HTTP request to a provider (LLM, search, crawl): configuration, signals, error classes.

Shared by the handlers in :mod:`deerflow_agent.providers`. Nothing here retries: a handler makes
one request per attempt and reports how it went; retries, backoff and rate limiting belong to
the controller, which reads the signals put in the metadata (keys from
:mod:`deerflow_common.signals`) on success and failure alike.

Every error carries its :class:`ErrorClass` for the controller's recovery policy, from the
status and the provider's code by the table of :mod:`deerflow_common.provider_codes`, the one
the controller reads for handlers that state no class (see :func:`error_class`). RATE_LIMITED
(429, burst-rate ones too: their ``error.code`` gets them a smaller retry budget and a longer
delay) and TRANSIENT (408/409/425/5xx, timeouts, broken connections, cut-off bodies) raise
:class:`HandlerError`, retryable, with the provider's Retry-After; FATAL (401/402/403, quota and
billing codes, other 4xx) and SOFT (a content-safety refusal: no sign of a failing provider)
raise :class:`FatalError`.

Messages name the provider, the status and the URL (without credentials), never the API key.

A payload may name its own ``base_url`` only with its own ``api_key``: the agent's key goes only
to the URL the operator configured (see :meth:`Provider.endpoint` and docs/SECURITY.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from deerflow_common import provider_codes, signals
from deerflow_common.errors import ErrorClass

from ._context import TaskContext
from ._errors import FatalError, HandlerError
from ._http import client, decimal, guarded_client, response_signals
from ._netpolicy import AddressRefused, refusal_sentence

if TYPE_CHECKING:  # loaded by the first request, not with the agent (its start-up)
    import aiohttp

__all__ = ["Endpoint", "Provider", "Reply", "error_class", "is_retryable"]

_AUTH_STATUS = frozenset({401, 403})
_CODE_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_MESSAGE_CHARS = 200


def is_retryable(status: int, code: str | None) -> bool:
    """Whether a failed request's HTTP status and provider error code make it worth retrying:
    its class (:func:`error_class`) is RATE_LIMITED or TRANSIENT.

    Quota and billing codes are permanent even on a 429: waiting does not add credit."""
    return error_class(status, code) in (ErrorClass.RATE_LIMITED, ErrorClass.TRANSIENT)


def error_class(status: int, code: str | None) -> ErrorClass:
    """The recovery class of a failed (non-2xx) request's HTTP status and provider error code,
    by the table of :mod:`deerflow_common.provider_codes` (the one the controller's classifier
    reads too); FATAL for an answer the table says nothing about (a 3xx)."""
    klass = provider_codes.provider_class(status, code)
    return ErrorClass.FATAL if klass is None else klass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one request goes and the key it carries (never logged or put in messages)."""

    base_url: str
    api_key: str
    guarded: bool = False
    """The base URL came from the payload (untrusted): connect only where the agent's address
    policy allows (:func:`deerflow_agent._http.guarded_client`)."""

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's 2xx answer. ``metadata`` already holds the signals of the response."""

    status: int
    body: bytes
    truncated: bool
    charset: str | None
    metadata: dict[str, str]
    where: str
    """``METHOD url`` without credentials, for messages."""

    def text(self) -> str:
        return self.body.decode(self.charset or "utf-8", errors="replace")

    def json(self, provider: Provider) -> Any:
        """The body as JSON. A 2xx body that is not JSON is a broken or cut-off answer (a proxy's
        error page, a dropped connection), so it is reported as retryable."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise HandlerError(
                f"{provider.label} answered {self.where} with HTTP {self.status} but a body that "
                f"is not JSON ({len(self.body)} bytes); it may have been cut off",
                metadata=self.metadata,
                error_class=ErrorClass.TRANSIENT,
            ) from None


@dataclass(frozen=True, slots=True)
class Provider:
    """One upstream service and where its handler finds its URL and key."""

    label: str
    """How messages name it: "the LLM provider"."""
    base_url_env: str
    api_key_env: str
    default_base_url: str
    """Used when neither the payload nor the environment names a base URL."""
    default_timeout_s: float
    """Per-request limit when the attempt has no deadline; the deadline wins when sooner."""

    def endpoint(self, handler: str, doc: Mapping[str, Any]) -> Endpoint:
        """Where to send the request and with which key.

        The operator's settings (``base_url_env``, else the default URL, with ``api_key_env``)
        are trusted. A payload's ``base_url`` other than that one is not: it must come with the
        payload's own ``api_key`` (the agent's key goes only to the operator's URL, never to a
        URL a submitter names) and is reached only where the agent's address policy allows.
        Raises FatalError for a missing key (naming the variable to set) or a bad URL."""
        trusted_url = os.environ.get(self.base_url_env, "").strip() or self.default_base_url
        named = _payload_string(handler, doc, "base_url")
        base_url = named or trusted_url
        problem = _base_url_problem(base_url)
        if problem:
            raise FatalError(
                f"{handler}: the base URL of {self.label} {problem}; fix the payload's "
                f"'base_url' or {self.base_url_env}"
            )
        guarded = bool(named) and named.rstrip("/") != trusted_url.rstrip("/")
        api_key = _payload_string(handler, doc, "api_key")
        if not api_key and guarded:
            raise FatalError(
                f"{handler}: the payload names a 'base_url' but no 'api_key'; the agent's "
                f"{self.api_key_env} is sent only to {self.base_url_env}'s URL, so pass the "
                "key for that URL in the payload's 'api_key'"
            )
        api_key = api_key or os.environ.get(self.api_key_env, "").strip()
        if not api_key:
            raise FatalError(
                f"{handler}: no API key for {self.label}; set {self.api_key_env} in the agent's "
                "environment or pass 'api_key' in the payload"
            )
        return Endpoint(base_url, api_key, guarded)

    async def request(
        self,
        ctx: TaskContext,
        method: str,
        url: str,
        *,
        api_key: str,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = 32 << 20,
        guarded: bool = False,
    ) -> Reply:
        """Send one request and read up to ``max_bytes`` of the answer; never retries.

        Blocks until the answer is read, the per-request timeout passes (the attempt's deadline
        or ``default_timeout_s``, whichever is sooner) or the attempt is cancelled. Returns a
        2xx :class:`Reply`; raises HandlerError (retryable) for transient failures and
        FatalError for permanent ones, both carrying the response's signals as metadata.
        ``guarded`` (a URL from the payload): connect only where ``ctx.address_policy`` allows,
        else FatalError naming the setting."""
        import aiohttp
        from yarl import URL

        where = f"{method} {_display(url)}"
        session = client()
        if guarded:
            session = guarded_client(ctx.address_policy)
            host = URL(url).raw_host or ""
            why = ctx.address_policy.why_refused_host(host)
            if why is not None:
                raise FatalError(
                    refusal_sentence(f"{where} to {self.label}", host.strip("[]"), why),
                    error_class=ErrorClass.FATAL,
                )
        timeout_s = min(self.default_timeout_s, ctx.time_left())
        if timeout_s <= 0:
            raise HandlerError(
                f"the attempt's deadline passed before {where} to {self.label}",
                error_class=ErrorClass.TIMEOUT,
            )
        loop = asyncio.get_running_loop()
        started = loop.time()
        metadata: dict[str, str] = {}
        try:
            async with session.request(
                method,
                url,
                json=json_body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                # Signals first: a body cut off mid-read still reports the status it came with.
                status = resp.status
                metadata.update(response_signals(status, resp.headers))
                body, truncated = await _read(resp, max_bytes)
                metadata[signals.LATENCY_S] = decimal(loop.time() - started)
                charset = resp.charset
                reason = resp.reason or _reason(status)
        except TimeoutError:
            metadata[signals.LATENCY_S] = decimal(loop.time() - started)
            raise HandlerError(
                f"{self.label} did not answer {where} within {timeout_s:.3g} s",
                metadata=metadata,
                error_class=ErrorClass.TRANSIENT,
            ) from None
        except aiohttp.InvalidURL:
            raise FatalError(
                f"{where} is not a valid URL for {self.label}", error_class=ErrorClass.FATAL
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                refused = exc.os_error
                raise FatalError(
                    refusal_sentence(f"{where} to {self.label}", refused.address, refused.why),
                    error_class=ErrorClass.FATAL,
                ) from None
            metadata[signals.LATENCY_S] = decimal(loop.time() - started)
            raise HandlerError(
                f"the request {where} to {self.label} failed: {_redact(str(exc), api_key)}",
                metadata=metadata,
                error_class=ErrorClass.TRANSIENT,
            ) from None
        except aiohttp.ClientError as exc:
            metadata[signals.LATENCY_S] = decimal(loop.time() - started)
            detail = _redact(str(exc) or type(exc).__name__, api_key)
            raise HandlerError(
                f"the request {where} to {self.label} failed: {detail}",
                metadata=metadata,
                error_class=ErrorClass.TRANSIENT,
            ) from None
        if 200 <= status < 300:
            return Reply(status, body, truncated, charset, metadata, where)
        raise self._failure(status, reason, body, metadata, where, api_key)

    def _failure(
        self,
        status: int,
        reason: str,
        body: bytes,
        metadata: dict[str, str],
        where: str,
        api_key: str,
    ) -> HandlerError | FatalError:
        code, said = _error_detail(body)
        if code is not None:
            metadata[signals.ERROR_CODE] = code
        answered = f"{self.label} answered {where} with HTTP {status} {reason}".rstrip()
        if code is not None:
            answered += f" ({code})"
        klass = error_class(status, code)
        quoted = f' It said: "{_redact(said, api_key)}"' if said else ""
        if klass is ErrorClass.SOFT:
            return FatalError(
                f"{answered}: it refused the content (a safety filter); change the input rather "
                f"than retry. Not retried.{quoted}",
                metadata=metadata,
                error_class=klass,
            )
        if status in _AUTH_STATUS:
            # Providers echo (parts of) a rejected key in their message: leave it out.
            return FatalError(
                f"{answered}: it rejected the API key; check {self.api_key_env} or the "
                "payload's 'api_key'. Not retried.",
                metadata=metadata,
                error_class=ErrorClass.FATAL,
            )
        if klass not in (ErrorClass.RATE_LIMITED, ErrorClass.TRANSIENT):
            if provider_codes.is_quota(code):
                advice = "the key is out of quota or credit; add credit or raise its quota"
            else:
                advice = "the request is wrong for it; fix the payload or the configuration"
            return FatalError(
                f"{answered}: {advice}. Not retried.{quoted}", metadata=metadata, error_class=klass
            )
        wait_s = signals.number(metadata, signals.RETRY_AFTER_S) or 0.0
        if provider_codes.is_burst_rate(code):
            advice = "the request rate rose too fast for it; ramp up more slowly"
        elif status == 429:
            advice = "the key is over its rate limit"
        else:
            advice = "a transient failure"
        if wait_s:
            advice += f"; it asked for a wait of {wait_s:.3g} s"
        return HandlerError(
            f"{answered}: {advice}.{quoted}",
            retry_after_s=wait_s,
            metadata=metadata,
            error_class=klass,
        )


def _base_url_problem(base_url: str) -> str:
    """Why ``base_url`` cannot be used, or "" when it can."""
    from yarl import URL

    try:
        url = URL(base_url)
    except (TypeError, ValueError):
        return "is not a URL"
    if url.scheme not in ("http", "https") or not url.host:
        return f"must be an http:// or https:// URL, got {_display(base_url)!r}"
    if url.user or url.password:
        # The key travels in its own field; credentials in the URL would clash with it.
        return "must not carry user:password (the API key is set separately)"
    return ""


def _payload_string(handler: str, doc: Mapping[str, Any], field: str) -> str:
    value = doc.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FatalError(f"{handler}: payload field {field!r} must be a string")
    return value.strip()


async def _read(resp: aiohttp.ClientResponse, max_bytes: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        body += chunk
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    return bytes(body), False


def _error_detail(body: bytes) -> tuple[str | None, str]:
    """(provider error code, provider message) from an error body: OpenAI's
    ``{"error": {"code", "type", "message"}}``, Tavily's ``{"detail": {"error"}}``, or text."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None, _shorten(body.decode("utf-8", errors="replace"))
    if not isinstance(doc, dict):
        return None, ""
    err = doc.get("error")
    code: object = None
    message: object = ""
    if isinstance(err, dict):
        code = next((c for c in (err.get("code"), err.get("type")) if isinstance(c, str)), None)
        message = err.get("message", "")
    elif isinstance(err, str):
        code = err if _CODE_SHAPE.fullmatch(err) else None
        message = "" if code else err
    else:
        code = doc.get("code") if isinstance(doc.get("code"), str) else doc.get("name")
        detail = doc.get("detail")
        message = detail.get("error", "") if isinstance(detail, dict) else detail or ""
        message = message or doc.get("message", "")
    found = code if isinstance(code, str) and _CODE_SHAPE.fullmatch(code) else None
    return found, _shorten(message) if isinstance(message, str) else ""


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _display(url: str) -> str:
    """The URL without user:password, for messages."""
    from yarl import URL

    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return "<an unparsable URL>"
    return str(parsed.with_user(None)) if parsed.user or parsed.password else url


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
