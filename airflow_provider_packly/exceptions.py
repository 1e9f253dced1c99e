"""Errors raised by the Packly provider.

One hierarchy, raised where the problem is known, carrying the fields a caller needs and a
``str()`` written for the person reading a task log. No message ever contains the client
secret, the Basic header or an access token: messages are built only from values that are
safe to show (status codes, Packly's error codes and texts, the client ID, URLs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PacklyAPIError",
    "PacklyAuthError",
    "PacklyConnectionConfigError",
    "PacklyError",
    "PacklyErrorItem",
    "PacklyIncompleteBodyError",
    "PacklyTransportError",
]

#: How much of a body that is not JSON is quoted in an error message.
_BODY_EXCERPT_CHARS = 200


class PacklyError(Exception):
    """Base class of every error this provider raises."""


class PacklyTransportError(PacklyError):
    """Packly could not be reached, or stopped answering, before a response arrived."""


class PacklyIncompleteBodyError(PacklyTransportError):
    """An answer's body arrived incomplete although its framing looked whole (a gzip or
    deflate stream that ended before its end); nothing of it is returned."""


_TIMEOUT_PHASES = {"ConnectTimeout": "connect", "ReadTimeout": "read", "WriteTimeout": "write", "PoolTimeout": "pool"}


def transport_error(exc: Exception, request: Any) -> PacklyTransportError:
    """Describe an ``httpx.TransportError`` for ``request`` (its URL holds no secret).

    A write the retry policy did not resend because it may have reached Packly (it marks the
    request ``packly_not_resent``) is described as possibly applied: blaming reachability
    would invite a resend that applies it twice.
    """
    url = f"{request.method} {request.url}"
    attempts = int(request.extensions.get("packly_attempts", 1))
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    not_resent = bool(request.extensions.get("packly_not_resent"))
    applied = (
        f"The {request.method} may have been applied by Packly, so it was not resent; check in Packly "
        "whether it took effect before sending it again."
    )
    phase = _TIMEOUT_PHASES.get(type(exc).__name__)
    if phase:
        seconds = (request.extensions.get("timeout") or {}).get(phase)
        limit = f" within the {seconds:g} s {phase} timeout" if isinstance(seconds, (int, float)) else ""
        what = (
            f"{url} got no {'connection' if phase in ('connect', 'pool') else 'answer'}{limit}{tries} "
            f"({type(exc).__name__}); raise the connection's {phase}_timeout or timeout"
        )
        return PacklyTransportError(f"{what}. {applied}" if not_resent else f"{what}, or retry later.")
    if not_resent:
        return PacklyTransportError(
            f"{url} lost its connection once the request had been sent{tries} "
            f"({type(exc).__name__}: {exc or 'no detail'}). {applied}"
        )
    return PacklyTransportError(
        f"{url} failed before Packly answered{tries} ({type(exc).__name__}: {exc or 'no detail'}); check the "
        "connection's Base URL and that Packly is reachable from this machine."
    )


class PacklyConnectionConfigError(PacklyError, ValueError):
    """The Airflow connection's settings cannot be used; the message says which and how to fix."""


@dataclass(frozen=True)
class PacklyErrorItem:
    """One item of the envelope's ``errors`` list, e.g. ``DLN_1101`` at path ``material``."""

    code: str | None
    path: str | None
    message: str | None

    def __str__(self) -> str:
        where = f" at {self.path!r}" if self.path else ""
        return f"{self.code or 'error'}{where}: {self.message or '(no message)'}"


@dataclass(frozen=True)
class ErrorBody:
    """What could be read from an error response's body, whatever its shape."""

    code: str | None = None
    message: str | None = None
    items: tuple[PacklyErrorItem, ...] = ()
    #: Why the body was not the Packly envelope (``None`` when it was).
    unreadable: str | None = None


def read_error_body(content: bytes, content_type: str) -> ErrorBody:
    """Read Packly's error envelope, an RFC 6749 5.2 token error, or say what the body was.

    Pure: shared by the sync and async paths and by token and API errors.
    """
    if not content.strip():
        return ErrorBody(unreadable="the response body was empty")
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        kind = (content_type.split(";")[0].strip() or "no content type") if content_type else "no content type"
        excerpt = content[:_BODY_EXCERPT_CHARS].decode("utf-8", "replace")
        excerpt = " ".join(excerpt.split())
        return ErrorBody(unreadable=f"the response body was not JSON ({kind}): {excerpt!r}")
    if not isinstance(document, dict):
        return ErrorBody(unreadable=f"the response body was JSON but not an object: {type(document).__name__}")
    envelope = document.get("response")
    if isinstance(envelope, dict) and ("code" in envelope or "message" in envelope):
        raw_items = envelope.get("errors") or []
        items = tuple(
            PacklyErrorItem(code=_text(i.get("code")), path=_text(i.get("path")), message=_text(i.get("message")))
            for i in raw_items
            if isinstance(i, dict)
        )
        return ErrorBody(code=_text(envelope.get("code")), message=_text(envelope.get("message")), items=items)
    if "error" in document:  # RFC 6749 section 5.2
        return ErrorBody(code=_text(document.get("error")), message=_text(document.get("error_description")))
    keys = ", ".join(sorted(str(k) for k in document)[:8])
    return ErrorBody(unreadable=f"the response body was JSON without Packly's error envelope (keys: {keys})")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class PacklyAPIError(PacklyError):
    """Packly answered an API call with a status that is not 2xx.

    ``code``, ``message`` and ``errors`` come from Packly's error envelope when the body was
    one; otherwise they are ``None``/empty and ``detail`` says what the body was (a proxy's HTML
    page, an empty body, truncated JSON).
    """

    def __init__(
        self,
        *,
        http_status: int,
        method: str,
        path: str,
        code: str | None = None,
        message: str | None = None,
        errors: tuple[PacklyErrorItem, ...] | list[PacklyErrorItem] = (),
        detail: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.attempts = attempts
        self.http_status = http_status
        self.method = method
        self.path = path
        self.code = code
        self.message = message
        self.errors: list[PacklyErrorItem] = list(errors)
        self.detail = detail
        super().__init__(self._describe())

    @classmethod
    def from_body(
        cls, *, http_status: int, method: str, path: str, body: ErrorBody, attempts: int = 1
    ) -> PacklyAPIError:
        return cls(
            http_status=http_status,
            method=method,
            path=path,
            code=body.code,
            message=body.message,
            errors=body.items,
            detail=body.unreadable,
            attempts=attempts,
        )

    def _describe(self) -> str:
        tries = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        text = f"Packly refused {self.method} {self.path} with HTTP {self.http_status}{tries}"
        if self.code or self.message:
            text += f": {self.code or 'error'}: {self.message or '(no message)'}"
        if self.errors:
            text += " (" + "; ".join(str(item) for item in self.errors) + ")"
        if self.detail:
            text += f"; {self.detail}"
        hint = _HINTS.get(self.http_status)
        if hint:
            text += f". {hint}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor: make the error picklable (Airflow may pickle task errors).
        return (_rebuild_api_error, (self.__dict__.copy(),))


def _rebuild_api_error(state: dict[str, Any]) -> PacklyAPIError:
    return PacklyAPIError(
        http_status=state["http_status"],
        method=state["method"],
        path=state["path"],
        code=state["code"],
        message=state["message"],
        errors=state["errors"],
        detail=state["detail"],
        attempts=state.get("attempts", 1),
    )


_HINTS = {
    400: "Check the request's parameters against the message above",
    500: "Packly failed; if this keeps happening, report the request to Packly",
    502: "A proxy in front of Packly failed; retry later",
    503: "Packly is unavailable; retry later",
    504: "A proxy in front of Packly timed out; retry later",
    401: "The access token was refused twice; check that the connection's credentials belong to this environment",
    403: "The credentials are valid but not allowed to do this; ask Packly to enable it for your account",
    404: "Check the endpoint path and the ids in it",
    429: "Packly is rate limiting this client; lower the request rate or retry later",
}


class PacklyAuthError(PacklyError):
    """Packly's token endpoint did not give a usable access token.

    Says which environment and client ID were refused and why; never the secret.
    """

    def __init__(
        self,
        reason: str,
        *,
        environment: str | None = None,
        client_id: str | None = None,
        token_url: str | None = None,
        http_status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.reason = reason
        self.environment = environment
        self.client_id = client_id
        self.token_url = token_url
        self.http_status = http_status
        self.code = code
        super().__init__(self._describe())

    def _describe(self) -> str:
        who = f"client ID {self.client_id!r}" if self.client_id else "the configured client"
        where = f" in the {self.environment} environment" if self.environment else ""
        url = f" ({self.token_url})" if self.token_url else ""
        return f"Packly did not issue an access token for {who}{where}{url}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_auth_error, (self.__dict__.copy(),))


def _rebuild_auth_error(state: dict[str, Any]) -> PacklyAuthError:
    return PacklyAuthError(
        state["reason"],
        environment=state["environment"],
        client_id=state["client_id"],
        token_url=state["token_url"],
        http_status=state["http_status"],
        code=state["code"],
    )
