"""Every error the Packly provider raises, and the ``Redactor`` that keeps secrets out of them.

One hierarchy, raised where the problem is known, carrying the fields a caller needs and a
``str()`` written for the person reading a task log. No message ever contains the client
secret, the Basic header or an access token: messages are built only from values that are
safe to show (status codes, Packly's error codes and texts, the client ID, URLs).

Pure and cheap to import: no httpx and no Airflow. The functions that describe an httpx
failure (``transport_error``, ``body_error``) read the exception's class name and the
request's method, URL and extensions, duck-typed, and the TLS checks walk ``ssl`` errors
only, so nothing here needs httpx itself. ``airflow_provider_packly.exceptions`` re-exports
this module.
"""

from __future__ import annotations

import base64
import html
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote

__all__ = [
    "REDACT_EXTENSION",
    "ErrorBody",
    "PacklyAPIError",
    "PacklyAuthError",
    "PacklyConnectionConfigError",
    "PacklyError",
    "PacklyErrorItem",
    "PacklyEventError",
    "PacklyIncompleteBodyError",
    "PacklyOrderNotFound",
    "PacklyTransportError",
    "PacklyValidationError",
    "Redactor",
    "body_error",
    "is_permanent_tls_failure",
    "quote_body",
    "read_error_body",
    "redactor_for",
    "tls_failure",
    "transport_error",
]

#: How much of a body that is not JSON is quoted in an error message.
_BODY_EXCERPT_CHARS = 200


class PacklyError(Exception):
    """Base class of every error this provider raises.

    ``to_dict()`` / ``from_dict()`` are the one serialisation of the whole hierarchy: plain
    JSON-able data naming the class and its fields (never a secret: only what the message may
    show). Pickling (``__reduce__``, Airflow may pickle a task's error) and the trigger events
    (an error raised on the triggerer is raised again on the worker) both use it, so an error
    keeps its class and its fields across either trip.
    """

    def to_dict(self) -> dict[str, Any]:
        """This error as plain data; ``from_dict`` builds it again."""
        return {"type": type(self).__name__, "message": str(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PacklyError:
        """The error ``to_dict`` described, of the class it names.

        Data from elsewhere (an event from a triggerer running another provider version) may
        name an unknown class or miss a field: it then becomes a ``PacklyError`` with the
        message it carries, rather than failing here.
        """
        kind = _ERROR_TYPES.get(str(data.get("type")), PacklyError)
        try:
            return kind._from_fields(data)
        except (KeyError, TypeError, ValueError):
            return PacklyError(str(data.get("message") or "A Packly error arrived without details."))

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> PacklyError:
        """Build this class from ``to_dict``'s fields (raise KeyError/TypeError/ValueError if they don't fit)."""
        message = data["message"]
        if not isinstance(message, str):
            raise TypeError("message must be a string")
        return cls(message)

    def __reduce__(self) -> str | tuple[Any, ...]:
        if _ERROR_TYPES.get(type(self).__name__) is not type(self):
            return super().__reduce__()  # a subclass defined elsewhere: Python's own pickling
        return (_error_from_dict, (self.to_dict(),))


def _error_from_dict(data: dict[str, Any]) -> PacklyError:
    """Unpickle a Packly error (module level, so pickle can find it)."""
    return PacklyError.from_dict(data)


class PacklyTransportError(PacklyError):
    """Packly could not be reached, stopped answering before its whole response arrived, or
    sent a response that could not be read (e.g. a body that is not the encoding it claims)."""


#: Set on a request (``request.extensions``) to a ``Redactor`` of the secrets that must never
#: be quoted from its answer (the auth flow and the token request set it).
REDACT_EXTENSION = "packly_redact"
#: A fragment of an encoded secret shorter than this is not removed (it would match by chance).
_MIN_FRAGMENT_CHARS = 8


class Redactor:
    """Removes secrets, and the forms a server may echo them in, from text quoted in an error.

    A proxy or a debugging page may echo request headers into an error body: the bearer token,
    the Basic value, or (decoded) the client secret. Each secret is removed as sent, as a JSON
    or HTML string would escape it, percent-encoded, percent-decoded and base64-encoded at any
    byte offset (so it is found inside a longer base64 text such as the Basic value). Redaction
    runs on the whole decoded text, before anything is escaped, collapsed or cut.

    The forms are computed on first use only: building one costs nothing on a call that works.
    """

    def __init__(self, *secrets: str | None) -> None:
        self._secrets = tuple(s for s in dict.fromkeys(secrets) if s)
        self._forms: tuple[str, ...] | None = None

    def including(self, *more: str | None) -> Redactor:
        """This redactor with ``more`` secrets."""
        return Redactor(*self._secrets, *more)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"

    @property
    def forms(self) -> tuple[str, ...]:
        if self._forms is None:
            forms: set[str] = set()
            for secret in self._secrets:
                forms.update(_encoded_forms(secret))
            # Longest first: a Basic value goes as a whole before the base64 fragments inside it.
            self._forms = tuple(sorted((f for f in forms if f), key=len, reverse=True))
        return self._forms

    def __call__(self, text: str) -> str:
        """``text`` with every form of every secret replaced by ``***``."""
        if not self._secrets or not text:
            return text
        for form in self.forms:
            if form in text:
                text = text.replace(form, "***")
        return text


def _encoded_forms(secret: str) -> set[str]:
    forms = {secret, unquote(secret), quote(secret, safe=""), quote_plus(secret), quote(secret)}
    forms.update({f.lower() for f in forms if "%" in f})  # %2f as well as %2F
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    forms.add(html.escape(secret))
    forms.add(html.escape(secret, quote=False))
    raw = secret.encode("utf-8")
    whole_secret = base64.b64encode(raw).decode("ascii")
    forms.update({whole_secret, whole_secret.replace("+", "-").replace("/", "_")})
    for offset in range(3):
        # The base64 of the secret wherever it starts in a longer text: the groups of 3 bytes
        # that lie wholly inside the secret encode to the same characters at every offset.
        whole = raw[offset:]
        whole = whole[: len(whole) - len(whole) % 3]
        encoded = base64.b64encode(whole).decode("ascii")
        if len(encoded) >= _MIN_FRAGMENT_CHARS:
            forms.add(encoded)
            forms.add(encoded.replace("+", "-").replace("/", "_"))  # base64url
    return {f for f in forms if len(f) >= min(len(secret), _MIN_FRAGMENT_CHARS)}


def redactor_for(request: Any) -> Redactor:
    """What must not be quoted from the answer to ``request``: the secrets its sender attached
    (``REDACT_EXTENSION``) and whatever credential its ``Authorization`` header carries."""
    if request is None:
        return Redactor()
    attached = request.extensions.get(REDACT_EXTENSION)
    base = attached if isinstance(attached, Redactor) else Redactor()
    authorization = request.headers.get("authorization")
    return base.including(authorization, *_credential(authorization))


def _credential(authorization: str | None) -> tuple[str, ...]:
    """The credential of an ``Authorization`` value (``Bearer <token>``: the token)."""
    _scheme, _, credential = (authorization or "").partition(" ")
    return (credential.strip(),) if credential.strip() else ()


class PacklyIncompleteBodyError(PacklyTransportError):
    """An answer's body arrived incomplete although its framing looked whole (a gzip or
    deflate stream that ended before its end); nothing of it is returned."""


_TIMEOUT_PHASES = {"ConnectTimeout": "connect", "ReadTimeout": "read", "WriteTimeout": "write", "PoolTimeout": "pool"}


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under a transport failure: the deepest in the chain, ``ssl``'s own (httpx
    wraps httpcore's, which wraps ssl's; aiohttp's certificate error is an ``SSLError`` too,
    without ssl's details, and wraps ssl's)."""
    seen: set[int] = set()
    found = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            found = current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return found


def _tls_problem(exc: BaseException) -> tuple[str, str] | None:
    """(what the TLS failure was, what to do) when retrying cannot help, else ``None``.

    Pure: read by ``transport_error`` for the message and by the retry policy, which does not
    retry these (a certificate does not get better by asking again).
    """
    failure = tls_failure(exc)
    if failure is None:
        return None
    if isinstance(failure, ssl.SSLCertVerificationError):
        detail = failure.verify_message or failure.reason or "verification failed"
        return (
            f"the server's TLS certificate could not be verified (CERTIFICATE_VERIFY_FAILED: {detail})",
            (
                "if Packly is reached through a private CA or a TLS-inspecting proxy, set the connection's "
                "ca_bundle_path to that CA's PEM file"
            ),
        )
    reason = failure.reason or ""
    if (
        "CERTIFICATE_REQUIRED" in reason
        or "HANDSHAKE_FAILURE" in reason
        or "UNKNOWN_CA" in reason
        or "BAD_CERTIFICATE" in reason
    ):
        return (
            f"the server refused the TLS handshake ({reason}): it wants a client certificate it trusts",
            "set the connection's client_cert_path (and client_key_path) to the certificate issued for it",
        )
    return None


def is_permanent_tls_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a TLS failure that no retry can fix (see ``_tls_problem``)."""
    return _tls_problem(exc) is not None


def transport_error(exc: Exception, request: Any, *, proxy: str | None = None) -> PacklyTransportError:
    """Describe an ``httpx.TransportError`` for ``request`` (its URL holds no secret).

    ``proxy`` is the proxy as it may be shown (``PacklyConnection.proxy_display``: no
    credentials), named so the reader knows where the call went.

    A write the retry policy did not resend because it may have reached Packly (it marks the
    request ``packly_not_resent``) is described as possibly applied: blaming reachability
    would invite a resend that applies it twice.
    """
    url = f"{request.method} {request.url}"
    attempts = int(request.extensions.get("packly_attempts", 1))
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    via = f" through the proxy {proxy}" if proxy else ""
    tls = _tls_problem(exc)
    if tls is not None:
        return PacklyTransportError(f"{url} failed{via}{tries}: {tls[0]}; {tls[1]}.")
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
            f"({_exception_text(exc, request)}). {applied}"
        )
    check = "Base URL, its HTTP(S) proxy (gateway_url)" if proxy else "Base URL"
    hint = ""
    if request.url.scheme == "https" and type(exc).__name__ in _CLOSED_WITHOUT_ANSWER:
        # What a TLS 1.3 server that demands a client certificate looks like from here when
        # it closes without sending its alert (uvicorn does).
        hint = (
            "; a server that demands a TLS client certificate also closes the connection like this when "
            "none or an untrusted one is presented: see the connection's client_cert_path"
        )
    return PacklyTransportError(
        f"{url} failed before Packly answered{via}{tries} ({_exception_text(exc, request)}); check the "
        f"connection's {check} and that Packly is reachable from this machine{hint}."
    )


_CLOSED_WITHOUT_ANSWER = frozenset({"RemoteProtocolError", "ReadError"})


def body_error(exc: Exception, request: Any) -> PacklyTransportError:
    """Describe an ``httpx`` error raised while Packly's answer to ``request`` was being read
    or decoded (a dropped connection mid-body, a body that is not the encoding it claims)."""
    if type(exc).__name__ in _TIMEOUT_PHASES:
        return transport_error(exc, request)
    url = f"{request.method} {request.url}"
    if type(exc).__name__ == "DecodingError":
        return PacklyTransportError(
            f"Packly answered {url}, but its body could not be decoded ({_exception_text(exc, request)}): "
            "the body is not in the Content-Encoding its headers claim, so a proxy may have changed it. "
            "Retry later; if it keeps happening, report it to whoever runs the proxy or to Packly."
        )
    return PacklyTransportError(
        f"The connection broke while Packly's answer to {url} was being read ({_exception_text(exc, request)}); "
        "the answer is incomplete and nothing of it was kept. Retry later."
    )


def _exception_text(exc: Exception, request: Any) -> str:
    """``Type: message`` of an httpx error, without any secret and without header values.

    A request that could not be sent because of a header value says so without quoting it
    (h11 puts the offending value in its message).
    """
    name = type(exc).__name__
    if name == "LocalProtocolError":
        return f"{name}: a request header holds characters HTTP does not allow; its value is not shown"
    return f"{name}: {redactor_for(request)(str(exc)) or 'no detail'}"


class PacklyConnectionConfigError(PacklyError, ValueError):
    """The Airflow connection's settings cannot be used; the message says which and how to fix."""


class PacklyValidationError(PacklyError, ValueError):
    """An argument cannot be sent to Packly; raised before any request (at DAG parse time for operators)."""


class PacklyOrderNotFound(PacklyError, LookupError):
    """No order with this id was found while paging through ``/v1/reseller/orders``."""


class PacklyEventError(PacklyError):
    """A trigger event the resume method cannot trust (unknown status, missing fields)."""


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


def quote_body(content: bytes, redact: Redactor, limit: int = _BODY_EXCERPT_CHARS) -> str:
    """The start of a body for a message, quoted: decoded, redacted whole, then whitespace
    collapsed, cut to ``limit`` characters and escaped (in that order, so that no escaping or
    cut can hide part of a secret from the redaction)."""
    text = " ".join(redact(content.decode("utf-8", "replace")).split())
    return repr(redact(text)[:limit])  # collapsing whitespace may join a secret's parts


def read_error_body(content: bytes, content_type: str, redact: Redactor | Iterable[str] = ()) -> ErrorBody:
    """Read Packly's error envelope, an RFC 6749 5.2 token error, or say what the body was.

    Pure: shared by the sync and async paths and by token and API errors. Every text taken
    from the body passes ``redact`` first, whole and decoded, before it is escaped or cut: a
    body may echo the request's credentials.
    """
    if not isinstance(redact, Redactor):
        redact = Redactor(*redact)
    if not content.strip():
        return ErrorBody(unreadable="the response body was empty")
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        kind = (content_type.split(";")[0].strip() or "no content type") if content_type else "no content type"
        return ErrorBody(unreadable=f"the response body was not JSON ({kind}): {quote_body(content, redact)}")
    if not isinstance(document, dict):
        return ErrorBody(unreadable=f"the response body was JSON but not an object: {type(document).__name__}")

    def text(value: Any) -> str | None:
        return None if value is None else redact(str(value))

    envelope = document.get("response")
    if isinstance(envelope, dict) and ("code" in envelope or "message" in envelope):
        raw_items = envelope.get("errors") or []
        items = tuple(
            PacklyErrorItem(code=text(i.get("code")), path=text(i.get("path")), message=text(i.get("message")))
            for i in (raw_items if isinstance(raw_items, list) else [])
            if isinstance(i, dict)
        )
        return ErrorBody(code=text(envelope.get("code")), message=text(envelope.get("message")), items=items)
    if "error" in document:  # RFC 6749 section 5.2
        return ErrorBody(code=text(document.get("error")), message=text(document.get("error_description")))
    keys = redact(", ".join(sorted(str(k) for k in document)[:8]))
    return ErrorBody(unreadable=f"the response body was JSON without Packly's error envelope (keys: {keys})")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "http_status": self.http_status,
            "method": self.method,
            "path": self.path,
            "code": self.code,
            "message": self.message,
            "errors": [{"code": e.code, "path": e.path, "message": e.message} for e in self.errors],
            "detail": self.detail,
            "attempts": self.attempts,
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> PacklyAPIError:
        return cls(
            http_status=int(data["http_status"]),
            method=str(data.get("method") or "GET"),
            path=str(data.get("path") or ""),
            code=_optional_text(data.get("code")),
            message=_optional_text(data.get("message")),
            errors=[
                PacklyErrorItem(
                    code=_optional_text(e.get("code")),
                    path=_optional_text(e.get("path")),
                    message=_optional_text(e.get("message")),
                )
                for e in data.get("errors") or []
                if isinstance(e, Mapping)
            ],
            detail=_optional_text(data.get("detail")),
            attempts=int(data.get("attempts") or 1),
        )


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "reason": self.reason,
            "environment": self.environment,
            "client_id": self.client_id,
            "token_url": self.token_url,
            "http_status": self.http_status,
            "code": self.code,
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> PacklyAuthError:
        reason = data["reason"]
        if not isinstance(reason, str):
            raise TypeError("reason must be a string")
        status = data.get("http_status")
        return cls(
            reason,
            environment=_optional_text(data.get("environment")),
            client_id=_optional_text(data.get("client_id")),
            token_url=_optional_text(data.get("token_url")),
            http_status=None if status is None else int(status),
            code=_optional_text(data.get("code")),
        )


#: Every class ``PacklyError.from_dict`` builds, by the name ``to_dict`` writes.
_ERROR_TYPES: dict[str, type[PacklyError]] = {
    kind.__name__: kind
    for kind in (
        PacklyError,
        PacklyTransportError,
        PacklyIncompleteBodyError,
        PacklyConnectionConfigError,
        PacklyValidationError,
        PacklyOrderNotFound,
        PacklyEventError,
        PacklyAPIError,
        PacklyAuthError,
    )
}
