"""Every failure is a PacklyError (issue 9, items 11 to 13): odd Retry-After values, bodies that
are not their Content-Encoding, connections dropped mid-body, endpoints httpx cannot send,
numbers out of range in token responses and connection extras. Over real sockets on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import traceback

import pytest

from airflow_provider_packly import auth
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import (
    PacklyAPIError,
    PacklyConnectionConfigError,
    PacklyError,
    PacklyTransportError,
)
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.operators.packly import PacklyDielineOperator
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.retries import parse_retry_after

from ..loopback import RawRequest, http_response, loopback_server, token_answer, token_then
from .calls import failed_get, order_closed_events

TOKEN = "typed-failures-token"
SECRET = "typed-failures-secret"
ORDERS = "/v1/reseller/orders"
DIELINE = "/v1/reseller/dieline"
MODES = ["sync", "async"]


def connection(base_url: str, **overrides) -> PacklyConnection:
    settings = {"client_id": "typed-client", "client_secret": SECRET, "base_url": base_url, "retry_max_attempts": 1}
    settings.update(overrides)
    return PacklyConnection(**settings)


def api(answer):
    """A Packly whose token endpoint works and whose API answers ``answer(request)``."""
    return token_then(answer, token=token_answer(TOKEN))


def request_outcome(base_url: str, mode: str, endpoint: str = ORDERS, **settings) -> PacklyError:
    return failed_get(connection(base_url, **settings), mode, endpoint)


def stream_outcome(base_url: str, mode: str, endpoint: str = DIELINE) -> tuple[PacklyError, int]:
    """Read a streamed body chunk by chunk, as the dieline operator does: the error and the bytes read."""
    conn = connection(base_url)
    read = 0
    if mode == "sync":
        with (
            PacklyHook(connection=conn) as hook,
            pytest.raises(PacklyError) as raised,
            hook.stream("GET", endpoint) as response,
        ):
            for chunk in response.iter_bytes():
                read += len(chunk)
        return raised.value, read

    async def run() -> PacklyError:
        nonlocal read
        async with PacklyHook(connection=conn) as hook:
            with pytest.raises(PacklyError) as raised:
                async with hook.astream("GET", endpoint) as response:
                    async for chunk in response.aiter_bytes():
                        read += len(chunk)
            return raised.value

    return asyncio.run(run()), read


# -- 11. Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("²", None), ("٣", None), ("1e3", None), ("-5", None), ("", None), (" 7 ", 7.0), ("9" * 400, float("inf"))],
)
def test_retry_after_is_ascii_delta_seconds_or_ignored(value, seconds):
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date_still_works():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert parse_retry_after("Wed, 21 Oct 99999 07:28:30 GMT") is None


def _rate_limited(request: RawRequest) -> bytes:
    body = json.dumps({"response": {"code": "TOO_MANY_REQUESTS", "message": "slow down"}}).encode()
    return http_response(429, body, {"Content-Type": "application/json", "Retry-After": "²"})


@pytest.mark.parametrize("mode", MODES)
def test_a_429_with_a_unicode_digit_retry_after_stays_a_packly_error(mode):
    with loopback_server(api(_rate_limited)) as server:
        error = request_outcome(server.base_url, mode, retry_max_attempts=2, retry_backoff_seconds=0.01)
        api_calls = [r.path for r in server.requests].count(ORDERS)
    assert isinstance(error, PacklyAPIError) and error.http_status == 429
    assert api_calls == 2  # retried with backoff, the unusable Retry-After ignored


@pytest.mark.anyio
async def test_in_a_trigger_a_429_with_an_odd_retry_after_stays_transient(mocker):
    answers = iter([_rate_limited])

    def orders(request: RawRequest) -> bytes:
        answer = next(answers, None)
        if answer is not None:
            return answer(request)
        page = {"request": {}, "response": [{"id": "ORD-1", "status": "closed", "items": []}]}
        return http_response(200, json.dumps(page).encode(), {"Content-Type": "application/json"})

    with loopback_server(api(orders)) as server:
        events = await order_closed_events(mocker, connection(server.base_url))
    assert [event["status"] for event in events] == ["success"]


# -- 12. untyped httpx errors -------------------------------------------------------------------


def _plain_but_says_gzip(request: RawRequest) -> bytes:
    return http_response(200, b'{"response": []}', {"Content-Type": "application/json", "Content-Encoding": "gzip"})


@pytest.mark.parametrize("mode", MODES)
def test_a_token_body_that_is_not_its_content_encoding_is_a_packly_error(mode):
    with loopback_server(_plain_but_says_gzip) as server:
        error = request_outcome(server.base_url, mode)
    assert isinstance(error, PacklyTransportError)
    assert "/v1/oauth2/token" in str(error) and "could not be decoded" in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_an_api_body_that_is_not_its_content_encoding_is_a_packly_error(mode):
    with loopback_server(api(_plain_but_says_gzip)) as server:
        error = request_outcome(server.base_url, mode)
        streamed, _ = stream_outcome(server.base_url, mode)
    for failure in (error, streamed):
        assert isinstance(failure, PacklyTransportError)
        assert "/v1/reseller/" in str(failure) and "could not be decoded" in str(failure)


def _dropped_mid_body(request: RawRequest) -> bytes:
    # The status line, headers promising 5,000 bytes, 1,000 of them: then the connection closes.
    return http_response(200, b"%PDF-1.4\n" + b"x" * 991, {"Content-Type": "application/pdf"}, content_length=5000)


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_dropped_mid_body_while_streaming_is_a_packly_error(mode):
    with loopback_server(api(_dropped_mid_body)) as server:
        error, read = stream_outcome(server.base_url, mode)
    assert isinstance(error, PacklyTransportError)
    assert "connection broke while Packly's answer to GET" in str(error) and DIELINE in str(error)
    assert read <= 1000


def test_the_dieline_operator_fails_typed_when_the_connection_drops_mid_body(monkeypatch, tmp_path):
    with loopback_server(api(_dropped_mid_body)) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_PACKLY_DEFAULT",
            json.dumps({"conn_type": "packly", "login": "typed-client", "password": SECRET, "host": server.base_url}),
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
        with pytest.raises(PacklyTransportError, match="connection broke"):
            operator.execute({"params": {}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("endpoint", ["/v1/reseller/orders\r\nX-Injected: 1", "/v1/reseller/orders\n"])
def test_an_endpoint_httpx_cannot_send_is_a_validation_error(mode, endpoint):
    with loopback_server(api(_rate_limited)) as server:
        error = request_outcome(server.base_url, mode, endpoint=endpoint)
        api_calls = [r.path for r in server.requests if r.path != "/v1/oauth2/token"]
    assert isinstance(error, PacklyValidationError)
    assert "is not a URL path that can be sent" in str(error)
    assert api_calls == []
    # A traceback printed with its locals works (httpx's half-built URL is not in the chain).
    assert "PacklyValidationError" in "".join(
        traceback.TracebackException.from_exception(error, capture_locals=True).format()
    )


def test_an_absurdly_nested_error_body_is_described_not_a_recursion_error():
    body = b"[" * 100_000 + b"]" * 100_000
    with loopback_server(api(lambda request: http_response(500, body, {"Content-Type": "application/json"}))) as server:
        error = request_outcome(server.base_url, "sync")
    assert isinstance(error, PacklyAPIError) and "was not JSON" in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_an_absurdly_nested_success_body_is_a_packly_error(mode):
    body = b"[" * 100_000 + b"]" * 100_000
    with loopback_server(api(lambda request: http_response(200, body, {"Content-Type": "application/json"}))) as server:
        conn = connection(server.base_url)
        if mode == "sync":
            with PacklyHook(connection=conn) as hook, pytest.raises(PacklyError, match="the body was not JSON"):
                next(hook.iter_orders())
        else:

            async def run() -> None:
                async with PacklyHook(connection=conn) as hook:
                    with pytest.raises(PacklyError, match="the body was not JSON"):
                        await hook.aiter_orders().__anext__()

            asyncio.run(run())


# -- 13. numbers out of range -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_400_digit_expires_in_is_used_as_the_longest_lifetime(mode):
    body = b'{"token_type": "bearer", "access_token": "' + TOKEN.encode() + b'", "expires_in": ' + b"9" * 400 + b"}"
    with loopback_server(lambda request: http_response(200, body, {"Content-Type": "application/json"})) as server:
        hook = PacklyHook(connection=connection(server.base_url))
        if mode == "sync":
            with hook:
                assert hook.get_token() == TOKEN
        else:

            async def run() -> str:
                async with hook:
                    return await hook.aget_token()

            assert asyncio.run(run()) == TOKEN
        assert hook._require_tokens().get().lifetime == auth.MAX_TOKEN_LIFETIME


@pytest.mark.parametrize(
    ("expires_in", "says"),
    [
        (b"NaN", "expires_in is NaN"),
        (b"-" + b"9" * 400, "expires_in is a huge negative number"),
        (b'"\xc2\xb3600"', "not a number of seconds"),  # '³600': not ASCII digits
        (b'"1_000"', "not a number of seconds"),
    ],
)
def test_an_unusable_expires_in_is_a_token_error(expires_in, says):
    body = b'{"token_type": "bearer", "access_token": "' + TOKEN.encode() + b'", "expires_in": ' + expires_in + b"}"
    with loopback_server(lambda request: http_response(200, body, {"Content-Type": "application/json"})) as server:
        error = request_outcome(server.base_url, "sync")
    assert type(error).__name__ == "PacklyAuthError"
    assert says in str(error)


@pytest.mark.parametrize(
    "name",
    [
        "default_expires_in",
        "retry_max_attempts",
        "refresh_margin_seconds",
        "retry_max_seconds",
        "timeout",
        "read_timeout",
        "retry_backoff_max_seconds",
    ],
)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e400", 10**400, "1e300"])
def test_a_non_finite_or_absurd_number_in_the_extras_is_a_config_error(name, value):
    with pytest.raises(PacklyConnectionConfigError, match=f"has {name} = .* give a finite number no larger than"):
        PacklyConnection.from_fields(
            login="typed-client",
            password=SECRET,
            host="https://api.packly.io",
            extra={"environment": "live", name: value},
        )


@pytest.mark.parametrize(
    "name",
    [
        "token_refresh_margin",
        "retry_max_seconds",
        "retry_after_max_seconds",
        "timeout",
        "default_expires_in",
        "retry_max_attempts",
    ],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400])
def test_a_non_finite_number_given_directly_is_a_config_error(name, value):
    with pytest.raises(PacklyConnectionConfigError, match=f"has {name} = "):
        PacklyConnection(client_id="typed-client", client_secret=SECRET, **{name: value})


def test_a_fractional_default_lifetime_is_reported_as_given():
    with pytest.raises(
        PacklyConnectionConfigError, match=r"default_expires_in = '0.5' in its extra fields; give a whole number"
    ):
        PacklyConnection.from_fields(
            login="typed-client",
            password=SECRET,
            host="https://api.packly.io",
            extra={"environment": "live", "default_expires_in": "0.5"},
        )


def test_gzip_token_answers_still_work():
    """The decoding guard does not get in the way of Packly's documented gzip token answers."""
    body = gzip.compress(json.dumps({"token_type": "bearer", "access_token": TOKEN, "expires_in": 60}).encode())
    answer = http_response(200, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    with loopback_server(lambda request: answer) as server, PacklyHook(connection=connection(server.base_url)) as hook:
        assert hook.get_token() == TOKEN
