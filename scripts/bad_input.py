"""The bad-input table: every malformed answer or setting gives a clear error and leaks nothing.

Run ``./dev bad-input`` (or ``.venv/bin/python -m scripts.bad_input``). Each case feeds the
hook one bad thing (a token response, a connection setting, an API error body) through the
real code path, with ``httpx.MockTransport`` standing in for Packly, and checks:

* the call fails with a ``PacklyError`` subclass (or is accepted, where the table says so);
* the message names the problem (an expected phrase);
* the message, and the exception's ``repr``, contain neither the client secret, nor the
  Basic header value, nor any access token the fake Packly issued, in any of the forms a
  server may echo them in (escaped, base64, percent-encoded); for token and API cases, nor
  does the traceback with the locals of the provider's frames (as Sentry or pytest
  ``--showlocals`` show it).

The test suite runs every case (``tests/reliability/test_bad_input.py``).
"""

from __future__ import annotations

import base64
import functools
import gzip
import itertools
import json
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from airflow_provider_packly.auth import TOKEN_CACHE
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyError
from airflow_provider_packly.hooks.packly import PacklyHook

CLIENT_ID = "bad-input-client"
CLIENT_SECRET = "Sup3r-Secret-Value-7Q"
ISSUED_TOKEN = "AAAA%2FbadInputToken%3D"
BASIC = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
#: A secret that repr() and JSON escape, for the rows that check redaction runs before escaping.
QUOTING_SECRET = "Sup3r\\Se'cret\"Value-8R"
QUOTING_BASIC = base64.b64encode(f"{CLIENT_ID}:{QUOTING_SECRET}".encode()).decode()
SECRETS = (CLIENT_SECRET, BASIC, ISSUED_TOKEN, QUOTING_SECRET, QUOTING_BASIC)
#: Every form a leak may take in a message: as is, escaped, base64, percent-encoded.
LEAK_FORMS = tuple(
    dict.fromkeys(
        form
        for secret in SECRETS
        for form in (
            secret,
            repr(secret)[1:-1],
            json.dumps(secret)[1:-1],
            base64.b64encode(secret.encode()).decode().rstrip("="),
            quote(secret, safe=""),
        )
    )
)


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    run: Callable[[], Any]
    #: A phrase the error must contain; ``None`` for a case that must be accepted.
    expect: str | None


@dataclass(frozen=True)
class Outcome:
    case: Case
    error_type: str
    message: str
    named: bool
    leaked: bool

    @property
    def ok(self) -> bool:
        return self.named and not self.leaked

    @property
    def shown(self) -> str:
        """The part of the message after the common prefix that says who was refused."""
        _prefix, found, reason = self.message.partition("/v1/oauth2/token): ")
        return reason if found else self.message


def _json(body: Any, status: int = 200, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers={"content-type": content_type})


def _connection(**overrides: Any) -> PacklyConnection:
    settings: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "base_url": "https://api.packly.io",
        "environment": "live",
        "retry_max_attempts": 1,
    }
    settings.update(overrides)
    return PacklyConnection(**settings)


def _token_answer(response: httpx.Response, **connection: Any) -> Callable[[], Any]:
    """Ask for a token from a Packly whose token endpoint answers ``response``."""

    def run() -> Any:
        transport = httpx.MockTransport(lambda request: response)
        with PacklyHook(connection=_connection(**connection), transport=transport) as hook:
            return hook.get_token()

    return run


def _api_answer(
    response: httpx.Response | Callable[[httpx.Request], httpx.Response],
    call: Callable[[PacklyHook], Any] | None = None,
) -> Callable[[], Any]:
    """Call an API endpoint of a Packly whose token endpoint works and API answers ``response``
    (or what ``response(request)`` returns); ``call`` makes the call (default: a dieline GET)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return _json({"token_type": "bearer", "access_token": ISSUED_TOKEN, "expires_in": 3600})
        return response(request) if callable(response) else response

    def run() -> Any:
        with PacklyHook(connection=_connection(), transport=httpx.MockTransport(answer)) as hook:
            if call is not None:
                return call(hook)
            return hook.request("GET", "/v1/reseller/dieline", params={"article": "s001_v0"})

    return run


def _echo(status: int, template: str, content_type: str = "text/html") -> Callable[[httpx.Request], httpx.Response]:
    """An answer quoting the request's own Authorization header (``{auth}`` in ``template``)."""

    def answer(request: httpx.Request) -> httpx.Response:
        text = template
        for name, value in (
            ("auth", request.headers["authorization"]),
            ("token", ISSUED_TOKEN),
            ("secret", CLIENT_SECRET),
            ("basic", BASIC),
        ):
            text = text.replace("{" + name + "}", value)
        return httpx.Response(status, content=text.encode(), headers={"content-type": content_type})

    return answer


class _CutShort(httpx.SyncByteStream):
    """A body whose connection drops after its first chunk (as httpcore reports it)."""

    def __iter__(self) -> Any:
        yield b"%PDF-1.4 the first part of the file"
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def _cut_short(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=_CutShort(), headers={"content-type": "application/pdf"})


def _drain(hook: PacklyHook) -> int:
    """Read a dieline the way the dieline operator does: streamed, chunk by chunk."""
    with hook.stream("GET", "/v1/reseller/dieline") as response:
        return sum(len(chunk) for chunk in response.iter_bytes())


def _gzip_claimed(status: int = 200) -> httpx.Response:
    """A plain body whose headers say it is gzip (a proxy that re-encoded it, or lied)."""
    return httpx.Response(
        status,
        stream=httpx.ByteStream(b'{"token_type": "bearer"}'),  # decoded by the client, as off a socket
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )


# -- hostile answers: read as a stream, so each request needs a fresh one -------------------------
# The trickled rows run under a 1 s call deadline (a real connection's default is 180 s); the
# bomb rows under 60 s, so that building the bomb on a busy machine is not what they measure.


def _fresh_token_answer(make: Callable[[], httpx.Response], deadline: float = 1) -> Callable[[], Any]:
    """``_token_answer`` for an answer whose body is a stream: ``make`` builds one per request."""

    def run() -> Any:
        transport = httpx.MockTransport(lambda request: make())
        with PacklyHook(connection=_connection(request_deadline_seconds=deadline), transport=transport) as hook:
            return hook.get_token()

    return run


def _fresh_api_answer(make: Callable[[], httpx.Response], deadline: float = 1) -> Callable[[], Any]:
    """``_api_answer`` for an answer whose body is a stream."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return _json({"token_type": "bearer", "access_token": ISSUED_TOKEN, "expires_in": 3600})
        return make()

    def run() -> Any:
        with PacklyHook(
            connection=_connection(request_deadline_seconds=deadline), transport=httpx.MockTransport(answer)
        ) as hook:
            return hook.request("GET", "/v1/reseller/orders")

    return run


def _trickle(body: bytes, every: float = 0.1) -> Iterator[bytes]:
    """One byte per ``every`` seconds: each read gets data in time, so no read timeout fires."""
    for index in range(len(body)):
        time.sleep(every)
        yield body[index : index + 1]


def _endless(every: float = 0.01) -> Iterator[bytes]:
    yield b"["
    for _ in itertools.count():
        time.sleep(every)
        yield b"0,"


@functools.lru_cache(maxsize=1)
def _gzip_bomb() -> bytes:
    """100 MB of zeros in about 100 KB of gzip, built without holding the 100 MB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    return b"".join([*(compressor.compress(zeros) for _ in range(100)), compressor.flush()])


def _streamed(body: Callable[[], Iterator[bytes]], status: int = 200) -> Callable[[], httpx.Response]:
    """An answer whose body ``body()`` yields, made anew for each request."""
    return lambda: httpx.Response(status, content=body(), headers={"content-type": "application/json"})


def _bomb(status: int) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(
        status, content=iter([_gzip_bomb()]), headers={"content-type": "application/json", "content-encoding": "gzip"}
    )


def _settings(**fields: Any) -> Callable[[], Any]:
    def run() -> Any:
        values = {
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            "host": "https://api.packly.io",
            "extra": {"environment": "live"},
            "conn_id": "packly_default",
        }
        values.update(fields)
        return PacklyConnection.from_fields(**values)

    return run


_ENVELOPE = {
    "request": {"uri": "/v1/reseller/dieline", "method": "GET", "query": {"article": "s001_v0"}},
    "response": {
        "code": "VALIDATION_ERROR",
        "message": "Some parameters are wrong or missing",
        "http_status_code": 400,
        "errors": [{"code": "DLN_1101", "path": "material", "message": "material is required"}],
    },
}
_TOKEN = {"token_type": "bearer", "access_token": ISSUED_TOKEN, "expires_in": 3600}

CASES: tuple[Case, ...] = (
    Case(
        "token",
        "access_token missing",
        _token_answer(_json({"token_type": "bearer", "expires_in": 60})),
        "access_token is missing",
    ),
    Case("token", "access_token empty", _token_answer(_json({**_TOKEN, "access_token": ""})), "access_token is empty"),
    Case(
        "token",
        "access_token a number",
        _token_answer(_json({**_TOKEN, "access_token": 12345})),
        "access_token is not a string (int)",
    ),
    Case("token", "token_type missing", _token_answer(_json({"access_token": ISSUED_TOKEN})), "token_type is missing"),
    Case(
        "token",
        "token_type 'mac'",
        _token_answer(_json({**_TOKEN, "token_type": "mac"})),
        "token_type 'mac'; only 'bearer'",
    ),
    Case(
        "token",
        "not JSON (text/plain)",
        _token_answer(_json(f"access_token={ISSUED_TOKEN}".encode(), content_type="text/plain")),
        "was not JSON",
    ),
    Case(
        "token",
        "HTML login page, HTTP 200",
        _token_answer(_json(b"<html><body>Sign in</body></html>", content_type="text/html")),
        "(HTTP 200, text/html, 33 bytes) was not JSON",
    ),
    Case("token", "empty body, HTTP 200", _token_answer(_json(b"")), "0 bytes) was not JSON"),
    Case("token", "JSON array", _token_answer(_json([_TOKEN])), "JSON but not an object (list)"),
    Case(
        "token",
        "huge body (5 MB)",
        _token_answer(_json({**_TOKEN, "padding": "x" * 5_000_000})),
        "far more than a token response",
    ),
    Case("token", "expires_in negative", _token_answer(_json({**_TOKEN, "expires_in": -60})), "expires_in is -60"),
    Case(
        "token",
        "expires_in zero",
        _token_answer(_json({**_TOKEN, "expires_in": 0})),
        "must live for more than 0 seconds",
    ),
    Case(
        "token",
        "expires_in a word",
        _token_answer(_json({**_TOKEN, "expires_in": "an hour"})),
        "'an hour', not a number",
    ),
    Case("token", "expires_in a numeric string", _token_answer(_json({**_TOKEN, "expires_in": "3600"})), None),
    Case(
        "token",
        "expires_in absent (default lifetime)",
        _token_answer(_json({"token_type": "Bearer", "access_token": ISSUED_TOKEN})),
        None,
    ),
    Case(
        "token",
        "401 with Packly's envelope",
        _token_answer(_json({"response": {"code": "UNAUTHORIZED", "message": "Bad client credentials"}}, 401)),
        "HTTP 401, Packly said UNAUTHORIZED: Bad client credentials",
    ),
    Case(
        "token",
        "400 with an RFC 6749 error",
        _token_answer(_json({"error": "invalid_scope", "error_description": "scope not allowed"}, 400)),
        "invalid_scope: scope not allowed",
    ),
    Case(
        "token",
        "502 proxy page",
        _token_answer(_json(b"<html><h1>502 Bad Gateway</h1></html>", 502, "text/html")),
        "HTTP 502; the response body was not JSON (text/html)",
    ),
    Case(
        "token",
        "400 echoing the Basic header",
        _token_answer(_json(f"bad request; Authorization: Basic {BASIC}".encode(), 400, "text/plain")),
        "Authorization: ***'",
    ),
    Case("connection", "no client ID", _settings(login=""), "has no client ID"),
    Case("connection", "no client secret", _settings(password=None), "has no client secret"),
    Case(
        "connection",
        "unknown environment",
        _settings(extra={"environment": "prod"}),
        "environment 'prod'; use 'sandbox' or 'live'",
    ),
    Case(
        "connection",
        "sandbox without a Base URL",
        _settings(host=None, extra={"environment": "sandbox"}),
        "Packly does not document its sandbox host",
    ),
    Case("connection", "Base URL not http(s)", _settings(host="ftp://api.packly.io"), "is not an http(s) URL"),
    Case(
        "connection",
        "plain http to a remote host",
        _settings(host="http://api.packly.io"),
        "plain http would send the client secret unencrypted",
    ),
    Case(
        "connection",
        "secret inside the Base URL",
        _settings(host=f"https://{CLIENT_ID}:{CLIENT_SECRET}@api.packly.io"),
        "credentials inside its Base URL",
    ),
    Case(
        "connection",
        "timeout not a number",
        _settings(extra={"environment": "live", "timeout": "soon"}),
        "timeout = 'soon'",
    ),
    Case(
        "connection",
        "retry attempts zero",
        _settings(extra={"environment": "live", "retry_max_attempts": 0}),
        "retry_max_attempts 0",
    ),
    Case(
        "connection",
        "call deadline zero",
        _settings(extra={"environment": "live", "request_deadline_seconds": 0}),
        "request_deadline_seconds = 0.0; give a number of seconds above 0",
    ),
    Case(
        "api",
        "400 envelope with an error item",
        _api_answer(_json(_ENVELOPE, 400)),
        "VALIDATION_ERROR: Some parameters are wrong or missing (DLN_1101 at 'material'",
    ),
    Case(
        "api",
        "404 envelope without errors",
        _api_answer(_json({"response": {"code": "NOT_FOUND", "message": "No such article"}}, 404)),
        "HTTP 404: NOT_FOUND: No such article",
    ),
    Case(
        "api",
        "502 proxy HTML",
        _api_answer(_json(b"<html><h1>502 Bad Gateway</h1></html>", 502, "text/html")),
        "HTTP 502; the response body was not JSON (text/html)",
    ),
    Case("api", "500 empty body", _api_answer(_json(b"", 500)), "HTTP 500; the response body was empty"),
    Case(
        "api",
        "500 truncated JSON",
        _api_answer(_json(b'{"response": {"code": "INTERNAL_SER', 500)),
        "HTTP 500; the response body was not JSON (application/json)",
    ),
    Case(
        "api",
        "404 JSON without the envelope",
        _api_answer(_json({"detail": "Not Found"}, 404)),
        "JSON without Packly's error envelope (keys: detail)",
    ),
    Case(
        "api",
        "400 HTML echoing the bearer header",
        _api_answer(_echo(400, "<html><pre>Authorization: {auth}</pre></html>")),
        "<pre>Authorization: ***</pre>",
    ),
    Case(
        "api",
        "422 envelope quoting the token",
        _api_answer(
            _echo(
                422,
                json.dumps(
                    {
                        "response": {
                            "code": "BAD_TOKEN",
                            "message": "{auth} refused",
                            "errors": [{"code": "X", "path": "{token}", "message": "{auth}"}],
                        }
                    }
                ),
                "application/json",
            )
        ),
        "BAD_TOKEN: *** refused (X at '***': ***)",
    ),
    Case(
        "api",
        "500 echoing token, secret and Basic",
        _api_answer(_echo(500, "token={token} secret={secret} Basic {basic}", "text/plain")),
        "'token=*** secret=*** ***'",
    ),
    Case(
        "api",
        "502 page, Basic value across the cut",
        _api_answer(_echo(502, "y" * 172 + "{basic} and more")),
        "yyyy***",
    ),
    Case(
        "api",
        "400 echoing base64/percent-encoded secrets",
        _api_answer(
            _echo(
                400,
                base64.b64encode(ISSUED_TOKEN.encode()).decode()
                + " "
                + quote(ISSUED_TOKEN, safe="")
                + " "
                + quote(CLIENT_SECRET, safe=""),
                "text/plain",
            )
        ),
        "'*** *** ***'",
    ),
    Case(
        "token",
        "400 echoing a secret holding \\ ' \"",
        _token_answer(
            _json(f"refused secret {QUOTING_SECRET} here".encode(), 400, "text/plain"), client_secret=QUOTING_SECRET
        ),
        "refused secret *** here",
    ),
    Case(
        "token",
        "access_token with a control char",
        _token_answer(_json({**_TOKEN, "access_token": "AAAA\x0bBBBB"})),
        "cannot be sent in an HTTP header",
    ),
    Case(
        "token",
        "access_token not ASCII",
        _token_answer(_json({**_TOKEN, "access_token": "AAAA\u00e9BBBB"})),
        "cannot be sent in an HTTP header",
    ),
    Case(
        "token",
        "token_type 'mac' (and traceback locals)",
        _token_answer(_json({**_TOKEN, "token_type": "mac", "expires_in": -1})),
        "token_type 'mac'",
    ),
    Case(
        "token",
        "expires_in -1 (and traceback locals)",
        _token_answer(_json({**_TOKEN, "expires_in": -1})),
        "expires_in is -1",
    ),
    Case(
        "token",
        "expires_in NaN",
        _token_answer(
            _json(b'{"token_type": "bearer", "access_token": "' + ISSUED_TOKEN.encode() + b'", "expires_in": NaN}')
        ),
        "expires_in is NaN",
    ),
    Case(
        "token",
        "expires_in 400 digits (used as 10 years)",
        _token_answer(
            _json(
                b'{"token_type": "bearer", "access_token": "'
                + ISSUED_TOKEN.encode()
                + b'", "expires_in": '
                + b"9" * 400
                + b"}"
            )
        ),
        None,
    ),
    Case("token", "gzip header on a plain body", _token_answer(_gzip_claimed()), "its body could not be decoded"),
    Case("api", "gzip header on a plain body", _api_answer(_gzip_claimed()), "its body could not be decoded"),
    Case(
        "api",
        "429 with Retry-After: \u00b2",
        _api_answer(httpx.Response(429, headers=[(b"retry-after", "\u00b2".encode())])),
        "with HTTP 429",
    ),
    Case(
        "api",
        "connection dropped mid-body, stream()",
        _api_answer(_cut_short, _drain),
        "connection broke while Packly's answer",
    ),
    Case(
        "api",
        "endpoint holding CR LF",
        _api_answer(_json({}), lambda hook: hook.request("GET", "/v1/reseller/orders\r\nX-Injected: 1")),
        "is not a URL path that can be sent",
    ),
    Case(
        "connection",
        "default_expires_in 'inf'",
        _settings(extra={"environment": "live", "default_expires_in": "inf"}),
        "default_expires_in = 'inf' in its extra fields; give a finite number",
    ),
    *(
        Case(
            "connection",
            f"{field} 'nan'",
            _settings(extra={"environment": "live", field: "nan"}),
            f"{field} = 'nan' in its extra fields; give a finite number",
        )
        for field in ("retry_max_attempts", "refresh_margin_seconds", "retry_max_seconds")
    ),
    Case(
        "connection",
        "retry_max_attempts 400 digits",
        _settings(extra={"environment": "live", "retry_max_attempts": 10**400}),
        "retry_max_attempts = a number with more than 20 digits",
    ),
    Case(
        "connection",
        "timeout 1e300 (overflows timers)",
        _settings(extra={"environment": "live", "timeout": "1e300"}),
        "timeout = '1e300' in its extra fields; give a finite number no larger than",
    ),
    Case(
        "connection",
        "default_expires_in '0.5'",
        _settings(extra={"environment": "live", "default_expires_in": "0.5"}),
        "default_expires_in = '0.5' in its extra fields; give a whole number",
    ),
    Case(
        "token",
        "trickled, 1 byte / 0.1 s, 1 s deadline",
        _fresh_token_answer(_streamed(lambda: _trickle(json.dumps(_TOKEN).encode()))),
        "did not finish within its overall deadline of 1 s",
    ),
    Case(
        "token",
        "gzip bomb: 100 KB, 100 MB decoded",
        _fresh_token_answer(_bomb(200), deadline=60),
        "over 65,536 bytes, far more than a token response",
    ),
    Case(
        "api",
        "trickled, 1 byte / 0.1 s, 1 s deadline",
        _fresh_api_answer(_streamed(lambda: _trickle(b'{"response": []}' * 4))),
        "did not finish within its overall deadline of 1 s",
    ),
    Case(
        "api",
        "chunked answer that never ends",
        _fresh_api_answer(_streamed(_endless)),
        "did not finish within its overall deadline of 1 s",
    ),
    Case(
        "api",
        "500 whose body is a gzip bomb",
        _fresh_api_answer(_bomb(500), deadline=60),
        "HTTP 500; the response body was not JSON",
    ),
)


# -- hostile servers: bodies cut short, capped pages, writes cut off, endpoints, refresh outages --


class _Unread(httpx.SyncByteStream):
    """A body read when the client reads it, as from a socket (``content=`` is decoded at once)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Any:
        yield self.body


def _cut_gzip(body: bytes, keep: int) -> Callable[[], Any]:
    """A gzip answer whose last bytes were lost, re-framed with a matching Content-Length."""
    compressed = gzip.compress(body, mtime=0)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return _json(_TOKEN)
        cut = compressed[: len(compressed) - keep]
        return httpx.Response(
            200, stream=_Unread(cut), headers={"content-encoding": "gzip", "content-length": str(len(cut))}
        )

    def run() -> Any:
        with PacklyHook(connection=_connection(), transport=httpx.MockTransport(answer)) as hook:
            return hook.get_dieline("s001_v0", "SBS300", 100, 100, 100)

    return run


def _capped_pages() -> Any:
    """Packly answers 20 orders when 50 are asked for; the order wanted is on the third page."""
    orders = [{"id": f"ORD-{n:04d}", "status": "paid"} for n in range(60, 0, -1)]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return _json(_TOKEN)
        page = int(request.url.params["page"])
        return _json({"request": {}, "response": orders[page * 20 : page * 20 + 20]})

    with PacklyHook(connection=_connection(), transport=httpx.MockTransport(answer)) as hook:
        return hook.get_order("ORD-0001", limit=50)


def _post_reset_after_sending() -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return _json(_TOKEN)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    with PacklyHook(connection=_connection(), transport=httpx.MockTransport(answer)) as hook:
        return hook.request("POST", "/v1/reseller/orders", json={"reference": "PO-1"})


def _endpoint(endpoint: str, base_url: str = "https://gateway.example.com/packly") -> Callable[[], Any]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/v1/oauth2/token"):
            return _json(_TOKEN)
        return _json({"request": {}, "response": []})

    def run() -> Any:
        with PacklyHook(connection=_connection(base_url=base_url), transport=httpx.MockTransport(answer)) as hook:
            return hook.request("GET", endpoint)

    return run


def _refresh_fails_while_the_token_is_valid() -> Any:
    """The token endpoint fails 10 s before the token expires: the valid token is used."""
    from airflow_provider_packly.auth import TokenCache

    now = [time.monotonic()]
    tokens = [_json({**_TOKEN, "expires_in": 100})]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return tokens.pop() if tokens else _json(b"<html>503</html>", 503, "text/html")
        return _json({"request": {}, "response": []})

    cache = TokenCache(clock=lambda: now[0])
    with PacklyHook(connection=_connection(), transport=httpx.MockTransport(answer), token_cache=cache) as hook:
        hook.request("GET", "/v1/reseller/orders")
        now[0] += 90
        return hook.request("GET", "/v1/reseller/orders")


_PDF = b"%PDF-1.4\n" + bytes(range(256)) * 400 + b"\n%%EOF\n"

CASES += (
    Case("api", "gzip dieline cut short, matching length", _cut_gzip(_PDF, keep=500), "arrived incomplete"),
    Case("api", "gzip body missing only its trailer", _cut_gzip(_PDF, keep=8), "arrived incomplete"),
    Case("api", "orders: limit capped at 20 of 50", _capped_pages, None),
    Case(
        "api",
        "POST reset after its body was sent",
        _post_reset_after_sending,
        "may have been applied by Packly, so it was not resent",
    ),
    Case(
        "api",
        "endpoint climbing out with /../",
        _endpoint("/v1/../../admin"),
        "leads outside the connection's Base URL path '/packly'",
    ),
    Case(
        "api",
        "endpoint climbing out with %2e%2e",
        _endpoint("/v1/%2e%2e/%2E%2E/admin"),
        "leads outside the connection's Base URL path",
    ),
    Case(
        "api",
        "endpoint with a URL in its query",
        _endpoint("/v1/reseller/orders?next=https://elsewhere.example/x"),
        None,
    ),
    Case("token", "refresh fails while the token is valid", _refresh_fails_while_the_token_is_valid, None),
)


def run_case(case: Case) -> Outcome:
    TOKEN_CACHE.clear()
    try:
        case.run()
    except PacklyError as exc:
        message = str(exc)
        shown = message + repr(exc)
        if case.group != "connection":  # there the caller's own frames hold the secret it passed
            shown += provider_traceback(exc)
        leaked = any(form in shown for form in LEAK_FORMS)
        named = case.expect is not None and case.expect in message
        return Outcome(case, type(exc).__name__, message, named, leaked)
    except Exception as exc:  # noqa: BLE001 - any error that is not a PacklyError is the defect this reports
        return Outcome(case, f"untyped {type(exc).__name__}", str(exc), False, any(s in str(exc) for s in LEAK_FORMS))
    return Outcome(case, "accepted", "(accepted)", case.expect is None, False)


def provider_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and its chain with the locals of the provider's own frames."""
    shown = traceback.TracebackException.from_exception(exc, capture_locals=True)
    pending: list[traceback.TracebackException | None] = [shown]
    seen: list[traceback.TracebackException] = []
    while pending:
        part = pending.pop()
        if part is None or any(part is s for s in seen):
            continue
        seen.append(part)
        pending += [part.__cause__, part.__context__]
        for frame in part.stack:
            if "airflow_provider_packly" not in frame.filename:
                frame.locals = None
    return "".join(shown.format())


def run_all() -> list[Outcome]:
    try:
        return [run_case(case) for case in CASES]
    finally:
        TOKEN_CACHE.clear()


def main() -> int:
    outcomes = run_all()
    print(f"{'':2} {'bad input':44} {'error':28} what the message says")
    for outcome in outcomes:
        mark = "ok" if outcome.ok else "!!"
        message = outcome.shown if len(outcome.shown) <= 110 else outcome.shown[:107] + "..."
        print(f"{mark:2} {outcome.case.group + ': ' + outcome.case.name:44} {outcome.error_type:28} {message}")
    failures = [o for o in outcomes if not o.ok]
    leaks = sum(o.leaked for o in outcomes)
    print(
        f"\n{len(outcomes)} cases: {len(outcomes) - len(failures)} clear, {len(failures)} unclear, "
        f"{leaks} leaking a secret"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
