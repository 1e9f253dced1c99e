"""Secrets against hostile servers: echoed credentials, encoded echoes, unsendable tokens,
tracebacks with locals (issue 9, items 1 to 4). Over real sockets on loopback."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import traceback
from urllib.parse import quote, quote_plus

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyAuthError, PacklyError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.resources import PacklyValidationError

from ..loopback import RawRequest, http_response, loopback_server, token_answer, token_then
from .calls import failed_get, order_closed_events

CLIENT_ID = "echo-client"
SECRET = "Echo-Secret-Value-9xQ2"
TOKEN = "AAAA%2FechoedToken%3DBBBBcccc"
ORDERS = "/v1/reseller/orders"


def basic(secret: str = SECRET) -> str:
    return base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()


def connection(base_url: str, secret: str = SECRET, **overrides) -> PacklyConnection:
    settings = {"client_id": CLIENT_ID, "client_secret": secret, "base_url": base_url, "retry_max_attempts": 1}
    settings.update(overrides)
    return PacklyConnection(**settings)


def forms(secret: str) -> list[str]:
    """How a leaked secret may show: as is, escaped by repr() or JSON, encoded."""
    return [
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode().rstrip("="),
    ]


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        for form in forms(secret):
            assert form not in text, f"{form!r} leaked into: {text}"


def fail(exc: BaseException) -> str:
    """Everything a person or a log could see of an error."""
    return f"{exc}\n{exc!r}\n{getattr(exc, '__dict__', '')}"


def call(
    base_url: str, mode: str, *, secret: str = SECRET, path: str = "/v1/reseller/dieline", **settings
) -> PacklyError:
    """One API call, sync or async, that must fail with a PacklyError (returned)."""
    return failed_get(connection(base_url, secret, **settings), mode, path)


def echoing(answer):
    """A Packly whose token endpoint works and whose API answers ``answer(request)``."""
    return token_then(answer, token=token_answer(TOKEN))


# -- 1. an error body that echoes the request ---------------------------------------------------


def _html_echo(request: RawRequest) -> bytes:
    authorization = request.headers["authorization"]
    page = f"<html><body><h1>400 Bad Request</h1><pre>Authorization: {authorization}</pre></body></html>"
    return http_response(400, page.encode(), {"Content-Type": "text/html"})


def _envelope_echo(request: RawRequest) -> bytes:
    said = f"token {request.headers['authorization']} is not allowed"
    body = {
        "response": {
            "code": "VALIDATION_ERROR",
            "message": said,
            "errors": [{"code": "X", "path": TOKEN, "message": said}],
        }
    }
    return http_response(422, json.dumps(body).encode(), {"Content-Type": "application/json"})


def _keys_echo(request: RawRequest) -> bytes:
    body = {request.headers["authorization"]: "rejected", f"secret={SECRET}": 1, basic(): 2}
    return http_response(403, json.dumps(body).encode(), {"Content-Type": "application/json"})


def _rfc6749_echo(request: RawRequest) -> bytes:
    body = {"error": "invalid_token", "error_description": f"{request.headers['authorization']} expired"}
    return http_response(401, json.dumps(body).encode(), {"Content-Type": "application/json"})


def _all_secrets_echo(request: RawRequest) -> bytes:
    body = f"debug: token={TOKEN} client_secret={SECRET} Authorization: Basic {basic()}"
    return http_response(500, body.encode(), {"Content-Type": "text/plain"})


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("answer", [_html_echo, _envelope_echo, _rfc6749_echo, _keys_echo, _all_secrets_echo])
def test_an_api_error_body_echoing_the_credentials_loses_them(answer, mode):
    with loopback_server(echoing(answer)) as server:
        error = call(server.base_url, mode)
    assert isinstance(error, PacklyAPIError)
    assert "***" in str(error)
    assert_no_secret(fail(error), TOKEN, SECRET, basic())


@pytest.mark.anyio
async def test_a_trigger_event_payload_holds_no_echoed_token(mocker):
    def not_found(request: RawRequest) -> bytes:
        said = f"no orders for {request.headers['authorization']}"
        return http_response(404, json.dumps({"response": {"code": "NOT_FOUND", "message": said}}).encode())

    with loopback_server(echoing(not_found)) as server:
        events = await order_closed_events(mocker, connection(server.base_url))
    assert [event["status"] for event in events] == ["error"]
    assert "***" in events[0]["message"]
    assert_no_secret(json.dumps(events), TOKEN, SECRET, basic())


# -- 2. redaction that cannot be bypassed -------------------------------------------------------


QUOTING_SECRET = "Se\\cr'et\"Val-42-\\n-end"


def _token_endpoint_echo(body: str, status: int = 400):
    def handle(request: RawRequest) -> bytes:
        return http_response(status, body.encode(), {"Content-Type": "text/plain"})

    return handle


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_secret_with_backslash_and_quote_is_redacted_before_escaping(mode):
    body = f"bad client: secret {QUOTING_SECRET} refused; <pre>{html.escape(QUOTING_SECRET)}</pre>"
    with loopback_server(_token_endpoint_echo(body)) as server:
        error = call(server.base_url, mode, secret=QUOTING_SECRET)
    assert isinstance(error, PacklyAuthError)
    assert "secret *** refused; <pre>***</pre>" in str(error)
    assert_no_secret(fail(error), QUOTING_SECRET, basic(QUOTING_SECRET))


@pytest.mark.parametrize(
    ("what", "offset"),
    [("basic", 172), ("basic", 194), ("secret", 190), ("token", 185)],
)
def test_a_secret_straddling_the_excerpt_cut_leaks_no_part(what, offset):
    secret = {"basic": basic(), "secret": SECRET, "token": TOKEN}[what]
    body = "y" * offset + secret + " and more text after it"

    def answer(request: RawRequest) -> bytes:
        return http_response(502, body.encode(), {"Content-Type": "text/html"})

    with loopback_server(echoing(answer)) as server:
        error = call(server.base_url, "sync")
    assert isinstance(error, PacklyAPIError)
    # Before: the first characters up to the 200th were quoted (28 of a Basic value decode to
    # 21 bytes: the client ID and most of the secret).
    assert secret[:6] not in str(error)


def _encodings(value: str) -> list[tuple[str, int]]:
    """Encoded echoes of ``value``, each with how many leading characters encode something else."""
    raw = value.encode()
    return [
        (base64.b64encode(raw).decode(), 0),
        (base64.urlsafe_b64encode(raw).decode().rstrip("="), 0),
        (base64.b64encode(b"user:" + raw).decode(), 8),  # inside a longer base64 text: offsets 2 and 1
        (base64.b64encode(b"usr:" + raw).decode(), 8),
        (quote(value, safe=""), 0),
        (quote_plus(value), 0),
        (re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(value, safe="")), 0),
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["token", "secret", "token percent-decoded"])
def test_base64_and_percent_encoded_echoes_are_redacted(kind, mode):
    value = {"token": TOKEN, "secret": SECRET, "token percent-decoded": "AAAA/echoedToken=BBBBcccc"}[kind]
    echoes = _encodings(value) if kind != "token percent-decoded" else [(value, 0)]

    def answer(request: RawRequest) -> bytes:
        return http_response(400, (" | ".join(echo for echo, _ in echoes)).encode(), {"Content-Type": "text/plain"})

    with loopback_server(echoing(answer)) as server:
        error = call(server.base_url, mode)
    text = fail(error)
    assert "***" in text
    for echo, skip in echoes:
        # What is left of an echo is at most the base64 characters at either end that also
        # encode neighbouring bytes: never 6 characters in a row that encode only the secret.
        for start in range(skip, len(echo.rstrip("=")) - 6):
            assert echo[start : start + 6] not in text, (echo, text)


# -- 3. tokens that cannot be sent in a header ---------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["tok\x0ben-value", "tok\x01en-value", "tok\x7fen-value", "tökenvalue", "tok en-value", "token-value\t"]
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_token_that_cannot_be_a_header_value_is_refused_at_once(bad, mode):
    with loopback_server(lambda request: token_answer(bad)) as server:
        error = call(server.base_url, mode, retry_max_attempts=5, retry_backoff_seconds=0.01)
        sent = [request.path for request in server.requests]
    assert isinstance(error, PacklyAuthError), error
    assert "cannot be sent in an HTTP header" in str(error)
    assert sent == ["/v1/oauth2/token"]  # refused on the first answer; no API call, no retries
    assert_no_secret(fail(error), bad, SECRET)


@pytest.mark.parametrize("value", ["private\x0bvalue", "private-välue"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_unsendable_header_value_is_never_quoted_nor_retried(mode, value):
    with loopback_server(echoing(lambda request: http_response(200, b"{}"))) as server:
        conn = connection(server.base_url, retry_max_attempts=5, retry_backoff_seconds=0.01)

        async def arun() -> PacklyError:
            async with PacklyHook(connection=conn) as hook:
                with pytest.raises(PacklyError) as raised:
                    await hook.arequest("GET", ORDERS, headers={"X-Trace": value})
                return raised.value

        if mode == "sync":
            with PacklyHook(connection=conn) as hook, pytest.raises(PacklyError) as raised:
                hook.request("GET", ORDERS, headers={"X-Trace": value})
            error = raised.value
        else:
            error = asyncio.run(arun())
        assert isinstance(error, (PacklyTransportError, PacklyValidationError))
    assert "value is not shown" in str(error)
    assert "private" not in fail(error)
    assert "attempts" not in str(error)  # tried once: resending cannot make it valid
    assert [request.path for request in server.requests] in ([], ["/v1/oauth2/token"])  # never sent, never retried


# -- 4. tracebacks with locals -------------------------------------------------------------------


def _with_locals(exc: BaseException) -> str:
    """The whole chain (__cause__, __context__) as Sentry or pytest --showlocals would show it,
    less the locals of this test's own frames (which hold the secrets it set up)."""
    shown = traceback.TracebackException.from_exception(exc, capture_locals=True)
    for part in _chain(shown):
        for frame in part.stack:
            if "airflow_provider_packly" not in frame.filename:
                frame.locals = None
    return "".join(shown.format())


def _chain(shown: traceback.TracebackException) -> list[traceback.TracebackException]:
    pending: list[traceback.TracebackException | None] = [shown]
    seen: list[traceback.TracebackException] = []
    while pending:
        part = pending.pop()
        if part is not None and not any(part is s for s in seen):
            seen.append(part)
            pending += [part.__cause__, part.__context__]
    return seen


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "document",
    [
        {"token_type": "mac", "access_token": TOKEN, "expires_in": 3600},
        {"token_type": "bearer", "access_token": TOKEN, "expires_in": -1},
        {"token_type": "bearer", "access_token": TOKEN, "expires_in": "soon"},
        {"token_type": "bearer", "access_token": TOKEN + "\x01", "expires_in": 60},
    ],
    ids=["mac", "negative lifetime", "lifetime a word", "control character"],
)
def test_a_rejected_token_response_leaves_no_token_in_traceback_locals(document, mode):
    body = json.dumps(document).encode()
    with loopback_server(lambda request: http_response(200, body, {"Content-Type": "application/json"})) as server:
        error = call(server.base_url, mode)
    assert isinstance(error, PacklyAuthError)
    shown = _with_locals(error)
    assert "parse_token_response" in shown  # the frames are there, with their locals
    assert TOKEN not in shown and repr(TOKEN)[1:-1] not in shown


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_echoing_api_error_leaves_no_token_in_traceback_locals(mode):
    with loopback_server(echoing(_html_echo)) as server:
        error = call(server.base_url, mode)
    shown = _with_locals(error)
    assert "raise_for_packly_status" in shown
    assert_no_secret(shown, TOKEN, SECRET, basic())


def test_the_dieline_operator_quotes_no_echoed_token_from_a_body_that_is_not_a_pdf(monkeypatch, tmp_path):
    from airflow_provider_packly.operators.packly import PacklyDielineOperator

    def login_page(request: RawRequest) -> bytes:
        return http_response(
            200, f"{request.headers['authorization']} is not logged in".encode(), {"Content-Type": "text/plain"}
        )

    with loopback_server(echoing(login_page)) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_PACKLY_DEFAULT",
            json.dumps({"conn_type": "packly", "login": CLIENT_ID, "password": SECRET, "host": server.base_url}),
        )
        operator = PacklyDielineOperator(
            task_id="d",
            article="s020_v1",
            material="SBS300",
            width=1,
            depth=1,
            height=1,
            output_path=str(tmp_path / "d.pdf"),
        )
        with pytest.raises(PacklyError, match=r"not a PDF \(text/plain, starting '\*\*\* is not logge'\)") as raised:
            operator.execute({"params": {}})
    assert TOKEN[:6] not in fail(raised.value)


def test_a_secret_with_a_space_does_not_redact_its_last_word_everywhere():
    """Only an Authorization value is split into scheme and credential, never a secret."""
    with loopback_server(_token_endpoint_echo("refused", status=401)) as server:
        error = call(server.base_url, "sync", secret="my secret")
    assert "client ID and secret" in str(error)
