"""The token lifecycle against the sandbox over real loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time

import httpx
import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyAuthError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

pytestmark = pytest.mark.integration

CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"
ORDERS = "/v1/reseller/orders"


@pytest.fixture
def sandbox():
    with run_sandbox(SandboxConfig()) as running:
        yield running


def connection_to(sandbox, **overrides) -> PacklyConnection:
    settings = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "base_url": sandbox.base_url}
    settings.update(overrides)
    return PacklyConnection(**settings)


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that keeps each response's raw headers."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[tuple[str, httpx.Headers]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.responses.append((request.url.path, response.headers.copy()))
        return response


@pytest.mark.anyio
async def test_hundred_coroutines_on_ten_hooks_make_one_token_request(sandbox):
    hooks = [PacklyHook(connection=connection_to(sandbox)) for _ in range(10)]
    try:
        responses = await asyncio.gather(*(hooks[i % 10].arequest("GET", ORDERS) for i in range(100)))
    finally:
        await asyncio.gather(*(hook.aclose() for hook in hooks))
    assert all(response.status_code == 200 for response in responses)
    assert sandbox.state.token_requests == 1
    assert sandbox.state.api_requests[ORDERS] == 100


def test_twenty_threads_with_a_hook_each_make_one_token_request(sandbox):
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def worker() -> None:
        with PacklyHook(connection=connection_to(sandbox)) as hook:
            barrier.wait()
            statuses.append(hook.request("GET", ORDERS).status_code)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 20
    assert sandbox.state.token_requests == 1


@pytest.mark.anyio
async def test_wrong_credentials_one_request_one_shared_failure(sandbox):
    async with PacklyHook(connection=connection_to(sandbox, client_secret="wrong-secret")) as hook:
        outcomes = await asyncio.gather(*(hook.arequest("GET", ORDERS) for _ in range(100)), return_exceptions=True)
    assert sandbox.state.token_requests == 1
    assert all(isinstance(outcome, PacklyAuthError) for outcome in outcomes)
    assert len({str(outcome) for outcome in outcomes}) == 1
    message = str(outcomes[0])
    assert "client ID 'sandbox-client-id' in the sandbox environment" in message and "HTTP 401" in message
    assert "wrong-secret" not in message
    assert sandbox.state.api_requests[ORDERS] == 0


def test_credentials_of_the_other_environment_are_refused(sandbox):
    conn = connection_to(sandbox, client_id="live-client-id", client_secret="live-client-secret", environment="live")
    ok, message = PacklyHook(connection=conn).test_connection()
    assert not ok and "client ID 'live-client-id' in the live environment" in message
    assert "live-client-secret" not in message


def test_refresh_after_expiry():
    with run_sandbox(SandboxConfig(token_lifetime=4)) as sandbox:
        with PacklyHook(connection=connection_to(sandbox)) as hook:
            first = hook.get_token()
            hook.request("GET", ORDERS)
            assert hook.get_token() == first  # well inside the first half of its life on a loaded machine
            time.sleep(2.2)  # past half of a 4 s life: due for refresh
            hook.request("GET", ORDERS)
            second = hook.get_token()
        assert second != first
        assert sandbox.state.token_requests == 2
        assert sandbox.state.issued_tokens == [first, second]


def test_a_revoked_token_gets_one_refresh_and_one_retry(sandbox):
    with PacklyHook(connection=connection_to(sandbox)) as hook:
        hook.request("GET", ORDERS)
        sandbox.state.revoke_all_tokens()
        assert hook.request("GET", ORDERS).status_code == 200
    assert sandbox.state.token_requests == 2
    assert sandbox.state.api_requests[ORDERS] == 3  # the call, the 401, the retry


def test_a_second_401_raises(sandbox, mocker):
    with PacklyHook(connection=connection_to(sandbox)) as hook:
        hook.get_token()
        sandbox.state.revoke_all_tokens()
        original = hook._tokens.fetch_uncached

        def fetch_then_revoke():
            token = original()
            sandbox.state.revoke_all_tokens()  # the fresh token is refused too
            return token

        mocker.patch.object(hook._tokens, "fetch_uncached", side_effect=fetch_then_revoke)
        with pytest.raises(PacklyAPIError) as caught:
            hook.request("GET", ORDERS)
    assert caught.value.http_status == 401 and caught.value.code == "UNAUTHORIZED"
    assert sandbox.state.api_requests[ORDERS] == 2


def test_opaque_token_sent_back_byte_for_byte_and_gzip_used(sandbox):
    transport = RecordingTransport()
    with PacklyHook(connection=connection_to(sandbox), transport=transport) as hook:
        token = hook.get_token()
        assert hook.request("GET", ORDERS).status_code == 200
    assert token == sandbox.state.issued_tokens[0]
    assert "%2F" in token  # the sandbox issues tokens shaped like the documented example
    token_path, token_headers = transport.responses[0]
    assert token_path == "/v1/oauth2/token"
    assert token_headers.get("content-encoding") == "gzip"


@pytest.mark.parametrize("token_type", ["bearer", "Bearer"])
def test_both_spellings_of_bearer(token_type):
    with (
        run_sandbox(SandboxConfig(token_type=token_type)) as sandbox,
        PacklyHook(connection=connection_to(sandbox)) as hook,
    ):
        assert hook.request("GET", ORDERS).status_code == 200


def test_error_envelope_from_the_sandbox_is_parsed(sandbox):
    with PacklyHook(connection=connection_to(sandbox)) as hook, pytest.raises(PacklyAPIError) as caught:
        hook.request(
            "GET", "/v1/reseller/dieline", params={"article": "s020_v1", "width": 10, "depth": 10, "height": 10}
        )
    error = caught.value
    assert (error.http_status, error.code) == (400, "VALIDATION_ERROR")
    assert [(item.code, item.path) for item in error.errors] == [("DLN_1101", "material")]
    assert "DLN_1101 at 'material'" in str(error)


def test_test_connection_against_the_sandbox(sandbox):
    ok, message = PacklyHook(connection=connection_to(sandbox)).test_connection()
    assert ok, message
    assert f"Packly sandbox environment at {sandbox.base_url} issued an access token" in message
    assert sandbox.state.issued_tokens[0] not in message


@pytest.mark.anyio
async def test_no_secret_in_any_log_line_error_or_repr(sandbox, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "airflow_provider_packly", "airflow"):
        caplog.set_level(logging.DEBUG, logger=name)
    conn = connection_to(sandbox, token_refresh_margin=0)
    texts: list[str] = []
    with PacklyHook(connection=conn) as hook:
        hook.request("GET", ORDERS)
        sandbox.state.revoke_all_tokens()
        hook.request("GET", ORDERS)  # 401, refresh, retry
        texts += [repr(hook), repr(hook.get_conn()), repr(hook._auth), str(hook._tokens.get())]
        try:
            hook.request("GET", "/v1/reseller/dieline")
        except PacklyAPIError as exc:
            texts.append(str(exc))
    async with PacklyHook(connection=conn) as hook:
        await hook.arequest("GET", ORDERS)
    with PacklyHook(connection=connection_to(sandbox, client_secret="another-wrong-secret")) as hook:
        try:
            hook.get_token()
        except PacklyAuthError as exc:
            texts += [str(exc), repr(exc)]
    captured = capfd.readouterr()
    texts += [record.getMessage() for record in caplog.records] + [caplog.text, captured.out, captured.err]
    assert any("HTTP Request: GET" in record.getMessage() for record in caplog.records), (
        "httpx logging was not captured"
    )
    assert any(record.name.startswith("httpcore") for record in caplog.records), "httpcore DEBUG was not captured"
    secrets = [CLIENT_SECRET, "another-wrong-secret", *sandbox.state.issued_tokens]
    secrets += [
        base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
        for secret in (CLIENT_SECRET, "another-wrong-secret")
    ]
    assert len(sandbox.state.issued_tokens) == 2  # the async hook reused the cached token
    leaks = [(secret[:6], text[:80]) for secret in secrets for text in texts if secret in text]
    assert leaks == []
