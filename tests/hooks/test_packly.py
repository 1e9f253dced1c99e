"""PacklyHook with httpx.MockTransport: the call path, the 401 flow, errors, connection tests."""

from __future__ import annotations

import json
import pickle

import httpx
import pytest

from airflow_provider_packly.exceptions import PacklyAPIError, PacklyAuthError, PacklyError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook

from ..conftest import CLIENT_SECRET
from ..fakes import FakePackly

ENVELOPE = {
    "request": {"uri": "/v1/reseller/dieline", "method": "GET", "query": {"article": "s001_v0"}},
    "response": {
        "code": "VALIDATION_ERROR",
        "message": "Some parameters are wrong or missing",
        "http_status_code": 400,
        "errors": [
            {
                "code": "DLN_1101",
                "path": "material",
                "message": "material is required and must be a valid material code",
            }
        ],
    },
}


def hook_for(fake: FakePackly, conn) -> PacklyHook:
    return PacklyHook(connection=conn, transport=httpx.MockTransport(fake), async_transport=httpx.MockTransport(fake))


def test_one_token_for_many_calls_and_one_client(make_connection):
    fake = FakePackly()
    with hook_for(fake, make_connection()) as hook:
        client = hook.get_client()
        for _ in range(5):
            hook.request("GET", "/v1/reseller/orders", params={"page": 0})
        assert hook.get_client() is client
    assert fake.token_requests == 1
    assert fake.seen_authorization == ["Bearer tok-1"] * 5
    assert client.is_closed


def test_a_401_refreshes_once_and_retries_once(make_connection):
    fake = FakePackly(httpx.Response(401), httpx.Response(200, json={"response": ["ok"]}))
    with hook_for(fake, make_connection()) as hook:
        assert hook.request("GET", "/v1/reseller/orders").json() == {"response": ["ok"]}
    assert fake.token_requests == 2
    assert fake.seen_authorization == ["Bearer tok-1", "Bearer tok-2"]


def test_a_second_401_raises(make_connection):
    fake = FakePackly(
        httpx.Response(401),
        httpx.Response(401, json={"response": {"code": "UNAUTHORIZED", "message": "Token revoked"}}),
    )
    with hook_for(fake, make_connection()) as hook, pytest.raises(PacklyAPIError) as caught:
        hook.request("GET", "/v1/reseller/orders")
    assert caught.value.http_status == 401 and caught.value.code == "UNAUTHORIZED"
    assert fake.token_requests == 2 and len(fake.seen_authorization) == 2


def test_post_body_is_resent_on_the_retry(make_connection):
    bodies: list[bytes] = []
    fake = FakePackly(httpx.Response(401), httpx.Response(200, json={}))

    def recording(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/oauth2/token":
            bodies.append(request.content)
        return fake(request)

    with PacklyHook(connection=make_connection(), transport=httpx.MockTransport(recording)) as hook:
        hook.request("POST", "/v1/anything", json={"a": 1})
    assert bodies == [b'{"a":1}', b'{"a":1}']


def test_error_envelope_is_parsed(make_connection):
    fake = FakePackly(httpx.Response(400, json=ENVELOPE))
    with hook_for(fake, make_connection()) as hook, pytest.raises(PacklyAPIError) as caught:
        hook.request("GET", "/v1/reseller/dieline", params={"article": "s001_v0"})
    error = caught.value
    assert (error.http_status, error.code, error.message, error.method, error.path) == (
        400,
        "VALIDATION_ERROR",
        "Some parameters are wrong or missing",
        "GET",
        "/v1/reseller/dieline",
    )
    assert [(item.code, item.path) for item in error.errors] == [("DLN_1101", "material")]
    assert str(error) == (
        "Packly refused GET /v1/reseller/dieline with HTTP 400: VALIDATION_ERROR: Some parameters are wrong or "
        "missing (DLN_1101 at 'material': material is required and must be a valid material code). "
        "Check the request's parameters against the message above"
    )
    assert pickle.loads(pickle.dumps(error)).errors == error.errors


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>", headers={"content-type": "text/html"}),
            "HTTP 502; the response body was not JSON (text/html): '<html><h1>502 Bad Gateway</h1></html>'",
        ),
        (httpx.Response(503), "HTTP 503; the response body was empty"),
        (
            httpx.Response(500, content=b'{"response": {"code": "INTER', headers={"content-type": "application/json"}),
            "HTTP 500; the response body was not JSON (application/json)",
        ),
        (
            httpx.Response(404, json={"detail": "nope"}),
            "HTTP 404; the response body was JSON without Packly's error envelope (keys: detail)",
        ),
    ],
)
def test_bodies_that_are_not_the_envelope_still_give_a_clear_error(make_connection, response, expected):
    with (
        hook_for(FakePackly(response), make_connection(retry_max_attempts=1)) as hook,
        pytest.raises(PacklyAPIError) as caught,
    ):
        hook.request("GET", "/v1/reseller/orders")
    assert expected in str(caught.value)
    assert caught.value.code is None and caught.value.http_status == response.status_code


def test_token_is_never_sent_to_another_host(make_connection):
    fake = FakePackly()
    with (
        hook_for(fake, make_connection()) as hook,
        pytest.raises(PacklyError, match="not under the connection's Base URL"),
    ):
        hook.request("GET", "https://evil.example.com/v1/reseller/orders")
    assert fake.token_requests == 0


def test_full_url_under_the_base_url_is_accepted(make_connection):
    with hook_for(FakePackly(), make_connection()) as hook:
        assert hook.request("GET", "http://127.0.0.1:8089/v1/reseller/orders").request.url.path == "/v1/reseller/orders"


def test_unreachable_packly_gives_a_transport_error_after_retries(make_connection):
    attempts = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    conn = make_connection(retry_backoff_seconds=0.001)
    with (
        PacklyHook(connection=conn, transport=httpx.MockTransport(refuse)) as hook,
        pytest.raises(
            PacklyTransportError,
            match=r"POST http://127.0.0.1:8089/v1/oauth2/token failed before Packly answered after 5 attempts",
        ),
    ):
        hook.get_token()
    assert attempts == ["/v1/oauth2/token"] * 5


def test_test_connection_reports_environment_and_expiry(make_connection):
    ok, message = hook_for(FakePackly(), make_connection()).test_connection()
    assert ok
    assert message.startswith(
        "Packly sandbox environment at http://127.0.0.1:8089 issued an access token to client ID 'test-client-id',"
        " valid until 20"
    )


def test_test_connection_reports_refusal_without_secret(make_connection):
    ok, message = hook_for(FakePackly(token_status=401), make_connection()).test_connection()
    assert not ok
    assert "Bad client credentials" in message and "client ID 'test-client-id' in the sandbox environment" in message
    assert CLIENT_SECRET not in message


def test_test_connection_reports_bad_settings(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PACKLY_BROKEN",
        json.dumps({"conn_type": "packly", "login": "x", "password": "y", "extra": {"environment": "sandbox"}}),
    )
    ok, message = PacklyHook("packly_broken").test_connection()
    assert not ok and "has no Base URL" in message


def test_repr_names_only_the_connection_id(make_connection):
    hook = hook_for(FakePackly(), make_connection())
    hook.get_token()
    assert repr(hook) == "PacklyHook(packly_conn_id='packly_default')"
    assert "tok-1" not in repr(hook._auth) and CLIENT_SECRET not in repr(hook._tokens.connection)
    hook.close()


def test_connection_from_environment_variable(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PACKLY_DEFAULT",
        json.dumps(
            {
                "conn_type": "packly",
                "login": "id",
                "password": "pw",
                "host": "http://127.0.0.1:8089",
                "extra": {"environment": "sandbox"},
            }
        ),
    )
    fake = FakePackly()
    with PacklyHook(transport=httpx.MockTransport(fake)) as hook:
        assert hook.get_token() == "tok-1"
        assert hook.get_conn().client_id == "id"


@pytest.mark.anyio
async def test_async_calls_share_the_token_and_the_401_flow(make_connection):
    import asyncio

    fake = FakePackly(httpx.Response(401), httpx.Response(200, json={"response": []}))  # then 200s
    async with hook_for(fake, make_connection()) as hook:
        client = await hook.aget_client()
        responses = await asyncio.gather(*(hook.arequest("GET", "/v1/reseller/orders") for _ in range(20)))
        assert await hook.aget_client() is client
        assert await hook.aget_token() == "tok-2"
    assert all(response.status_code == 200 for response in responses)
    assert fake.token_requests == 2  # the one 401 dropped tok-1 once
    assert client.is_closed


@pytest.mark.anyio
async def test_async_error_envelope(make_connection):
    async with hook_for(FakePackly(httpx.Response(400, json=ENVELOPE)), make_connection()) as hook:
        with pytest.raises(PacklyAPIError) as caught:
            await hook.arequest("GET", "/v1/reseller/dieline")
    assert caught.value.errors[0].code == "DLN_1101"


@pytest.mark.anyio
async def test_async_token_refusal_raises_auth_error(make_connection):
    async with hook_for(FakePackly(token_status=401), make_connection()) as hook:
        with pytest.raises(PacklyAuthError, match="Bad client credentials"):
            await hook.arequest("GET", "/v1/reseller/orders")


@pytest.mark.anyio
async def test_async_connection_lookup_from_environment_variable(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PACKLY_ASYNC",
        json.dumps(
            {
                "conn_type": "packly",
                "login": "id",
                "password": "pw",
                "host": "http://127.0.0.1:8089",
                "extra": {"environment": "sandbox"},
            }
        ),
    )
    async with PacklyHook("packly_async", async_transport=httpx.MockTransport(FakePackly())) as hook:
        assert (await hook.aget_conn()).conn_id == "packly_async"
        assert await hook.aget_token() == "tok-1"


@pytest.fixture
def below_the_masking_cap(monkeypatch):
    """Registration stops after ``MAX_MASKED_TOKENS`` per process: start these tests below it,
    whatever ran before them in this process."""
    import itertools

    import airflow_provider_packly._http.masking as module

    monkeypatch.setattr(module, "_masked_tokens", itertools.count())


@pytest.mark.usefixtures("below_the_masking_cap")
def test_each_new_token_is_registered_with_the_secrets_masker(make_connection, mocker):
    mask = mocker.patch("airflow.sdk.log.mask_secret")
    with hook_for(FakePackly(), make_connection()) as hook:
        hook.request("GET", "/v1/reseller/orders")
        hook.request("GET", "/v1/reseller/orders")
    mask.assert_called_once_with("tok-1")


@pytest.mark.anyio
@pytest.mark.usefixtures("below_the_masking_cap")
async def test_async_masking_never_makes_the_blocking_call(make_connection, mocker):
    import airflow.sdk.log as sdk_log

    blocking = mocker.patch("airflow.sdk.log.mask_secret")
    if hasattr(sdk_log, "amask_secret"):
        amask = mocker.patch("airflow.sdk.log.amask_secret", new=mocker.AsyncMock())
    async with hook_for(FakePackly(), make_connection()) as hook:
        await hook.arequest("GET", "/v1/reseller/orders")
    blocking.assert_not_called()
    if hasattr(sdk_log, "amask_secret"):
        amask.assert_awaited_once_with("tok-1")


def test_one_tls_context_per_process_built_off_the_event_loop(make_connection, mocker, monkeypatch):
    import asyncio
    import threading

    import airflow_provider_packly._http.shell as module
    from airflow_provider_packly.tls import SslContexts

    monkeypatch.setattr(module, "SSL_CONTEXTS", SslContexts())
    real = httpx.create_ssl_context
    built_on: list[str] = []

    def counting_create_ssl_context(*args, **kwargs):
        built_on.append(threading.current_thread().name)
        return real(*args, **kwargs)

    mocker.patch("httpx.create_ssl_context", side_effect=counting_create_ssl_context)

    async def main() -> None:
        for _ in range(3):
            async with hook_for(FakePackly(), make_connection()) as hook:
                await hook.arequest("GET", "/v1/reseller/orders")

    asyncio.run(main())
    for _ in range(3):
        with hook_for(FakePackly(), make_connection()) as hook:
            hook.request("GET", "/v1/reseller/orders")
    assert len(built_on) == 1
    assert built_on[0] != threading.main_thread().name  # built in a worker thread, not on the loop


def test_masker_registration_stops_at_the_cap(make_connection, mocker, monkeypatch):
    import itertools

    import airflow_provider_packly._http.masking as module

    monkeypatch.setattr(module, "MAX_MASKED_TOKENS", 3)
    monkeypatch.setattr(module, "_masked_tokens", itertools.count())
    mask = mocker.patch("airflow.sdk.log.mask_secret")
    for n in range(5):
        with hook_for(FakePackly(), make_connection(client_secret=f"secret-{n}")) as hook:
            hook.get_token()
    assert mask.call_count == 3
