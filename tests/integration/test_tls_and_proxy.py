"""Per-connection TLS and proxy settings, over real loopback HTTPS and a real forward proxy.

A CA, a server certificate and a client certificate are generated per module
(``cryptography``); the sandbox serves HTTPS with uvicorn's own TLS options; the proxy is the
small one in ``tls_proxy_helpers``. Every behaviour is checked for sync and async calls.
"""

from __future__ import annotations

import logging
import ssl
from urllib.parse import quote

import anyio
import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

from .tls_proxy_helpers import ForwardProxy

pytestmark = pytest.mark.integration

SANDBOX_ID = "sandbox-client-id"
SANDBOX_SECRET = "sandbox-client-secret"
PROXY_USER = "proxy-user"
PROXY_PASSWORD = "pr0xy-P@ss/word"  # characters that need URL-encoding
ORDERS = "/v1/reseller/orders"


@pytest.fixture
def mtls_sandbox(pki):
    with run_sandbox(
        SandboxConfig(),
        ssl_certfile=str(pki.server_cert),
        ssl_keyfile=str(pki.server_key),
        ssl_ca_certs=str(pki.ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    ) as sandbox:
        yield sandbox


@pytest.fixture
def http_sandbox():
    with run_sandbox(SandboxConfig()) as sandbox:
        yield sandbox


@pytest.fixture
def no_proxy_environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def connection(base_url: str, **extra) -> PacklyConnection:
    """Through ``from_fields``: the extra keys exactly as a user writes them."""
    return PacklyConnection.from_fields(
        login=SANDBOX_ID,
        password=SANDBOX_SECRET,
        host=base_url,
        extra={"environment": "sandbox", **extra},
        conn_id="packly_tls",
    )


def call_sync(conn: PacklyConnection) -> int:
    with PacklyHook(connection=conn) as hook:
        hook.get_token()
        return len(hook.request("GET", ORDERS, params={"page": 0, "limit": 5}).json()["response"])


def call_async(conn: PacklyConnection) -> int:
    async def main() -> int:
        async with PacklyHook(connection=conn) as hook:
            await hook.aget_token()
            response = await hook.arequest("GET", ORDERS, params={"page": 0, "limit": 5})
            return len(response.json()["response"])

    return anyio.run(main)


CALLS = pytest.mark.parametrize("call", [call_sync, call_async], ids=["sync", "async"])


# -- verification -----------------------------------------------------------------------------


@CALLS
def test_ca_bundle_verifies_the_sandbox(tls_sandbox, pki, call, no_proxy_environment):
    assert tls_sandbox.base_url.startswith("https://127.0.0.1:")
    assert call(connection(tls_sandbox.base_url, ca_bundle_path=str(pki.ca))) == 5
    assert tls_sandbox.state.token_requests == 1


@CALLS
@pytest.mark.parametrize("extra", [{}, {"ca_bundle_path": "other"}], ids=["default CAs", "another CA"])
def test_unknown_ca_fails_with_a_clear_message_and_no_retry(tls_sandbox, pki, call, extra, no_proxy_environment):
    if extra:
        extra = {"ca_bundle_path": str(pki.other_ca)}
    with pytest.raises(PacklyTransportError) as caught:
        call(connection(tls_sandbox.base_url, **extra))
    message = str(caught.value)
    assert f"POST {tls_sandbox.base_url}/v1/oauth2/token" in message
    assert "TLS certificate could not be verified" in message and "CERTIFICATE_VERIFY_FAILED" in message
    assert "set the connection's ca_bundle_path" in message
    assert "attempts" not in message  # a certificate does not get better by retrying
    assert tls_sandbox.state.token_requests == 0


@CALLS
def test_verification_off_works_for_the_sandbox_and_warns(tls_sandbox, call, caplog, no_proxy_environment):
    with caplog.at_level(logging.WARNING):
        assert call(connection(tls_sandbox.base_url, verify_tls=False)) == 5
    warnings = [record.getMessage() for record in caplog.records if "verification turned off" in record.getMessage()]
    assert warnings == [
        (
            "Packly connection 'packly_tls' has TLS certificate verification turned off (verify_tls = false): anyone "
            "on the network path can read the client secret and tokens. Use this only with a test sandbox; for a "
            "private CA set ca_bundle_path instead."
        )
    ]


# -- client certificate -----------------------------------------------------------------------


@CALLS
@pytest.mark.parametrize("files", ["cert and key", "one PEM"])
def test_client_certificate_is_presented(mtls_sandbox, pki, call, files, no_proxy_environment):
    if files == "one PEM":
        extra = {"client_cert_path": str(pki.client_cert_and_key)}
    else:
        extra = {"client_cert_path": str(pki.client_cert), "client_key_path": str(pki.client_key)}
    assert call(connection(mtls_sandbox.base_url, ca_bundle_path=str(pki.ca), **extra)) == 5
    assert mtls_sandbox.state.token_requests == 1


@CALLS
def test_server_demanding_a_client_certificate_refuses_a_call_without(mtls_sandbox, pki, call, no_proxy_environment):
    with pytest.raises(PacklyTransportError) as caught:
        call(connection(mtls_sandbox.base_url, ca_bundle_path=str(pki.ca), retry_max_attempts=1))
    assert "client_cert_path" in str(caught.value)
    assert mtls_sandbox.state.token_requests == 0


# -- proxy ------------------------------------------------------------------------------------


@CALLS
def test_https_calls_tunnel_through_the_connections_proxy(tls_sandbox, pki, call, no_proxy_environment):
    with ForwardProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        gateway = proxy.url(PROXY_USER, quote(PROXY_PASSWORD, safe=""))
        assert call(connection(tls_sandbox.base_url, ca_bundle_path=str(pki.ca), gateway_url=gateway)) == 5
    authority = tls_sandbox.base_url.removeprefix("https://")
    assert proxy.counts.connects and set(proxy.counts.connects) == {authority}
    assert proxy.counts.plain == [] and proxy.counts.refused == 0
    assert tls_sandbox.state.token_requests == 1


@CALLS
def test_plain_http_calls_are_forwarded_by_the_connections_proxy(http_sandbox, call, no_proxy_environment):
    with ForwardProxy() as proxy:
        assert call(connection(http_sandbox.base_url, gateway_url=proxy.url())) == 5
    assert proxy.counts.plain == [
        f"POST {http_sandbox.base_url}/v1/oauth2/token",
        f"GET {http_sandbox.base_url}{ORDERS}?page=0&limit=5",
    ]
    assert proxy.counts.connects == []


@CALLS
def test_without_a_connection_proxy_the_environment_still_applies(
    http_sandbox, call, monkeypatch, no_proxy_environment
):
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        assert call(connection(http_sandbox.base_url)) == 5
    assert len(proxy.counts.plain) == 2


@CALLS
def test_connection_proxy_replaces_the_environments(http_sandbox, call, monkeypatch, no_proxy_environment):
    with ForwardProxy() as env_proxy, ForwardProxy() as conn_proxy:
        monkeypatch.setenv("HTTP_PROXY", env_proxy.url())
        assert call(connection(http_sandbox.base_url, gateway_url=conn_proxy.url())) == 5
    assert (len(conn_proxy.counts.plain), len(env_proxy.counts.plain)) == (2, 0)


@CALLS
def test_proxy_password_is_never_shown(tls_sandbox, pki, call, caplog, no_proxy_environment):
    """A refused proxy login: the error, the logs (DEBUG, httpx and httpcore included) and
    every repr are searched for the password, raw and URL-encoded."""
    with ForwardProxy(credentials=(PROXY_USER, "the-right-one")) as proxy:
        gateway = proxy.url(PROXY_USER, quote(PROXY_PASSWORD, safe=""))
        conn = connection(tls_sandbox.base_url, ca_bundle_path=str(pki.ca), gateway_url=gateway, retry_max_attempts=1)
        with caplog.at_level(logging.DEBUG), pytest.raises(PacklyError) as caught:
            call(conn)
    assert proxy.counts.refused >= 1 and tls_sandbox.state.token_requests == 0
    message = str(caught.value)
    assert f"through the proxy http://127.0.0.1:{proxy.port}" in message
    shown = [message, repr(caught.value), repr(conn), str(conn), repr(PacklyHook(connection=conn)), caplog.text]
    for secret in (PROXY_PASSWORD, quote(PROXY_PASSWORD, safe=""), gateway):
        assert not any(secret in text for text in shown), secret
