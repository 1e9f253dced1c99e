"""The TLS and proxy settings of a ``packly`` connection: read, checked and kept secret."""

from __future__ import annotations

import re
import ssl

import httpx
import pytest

from airflow_provider_packly.connection import PacklyConnection, TlsSettings
from airflow_provider_packly.exceptions import PacklyConnectionConfigError, transport_error
from airflow_provider_packly.retries import RetryPolicy

PASSWORD = "pr0xy-S3cret"


def build(extra: dict, host: str = "https://packly.example.com", environment: str = "sandbox") -> PacklyConnection:
    return PacklyConnection.from_fields(
        login="cid", password="secret", host=host, extra={"environment": environment, **extra}, conn_id="packly_tls"
    )


def test_defaults_verify_with_the_default_cas_and_no_proxy():
    conn = build({})
    assert conn.tls == TlsSettings(verify=True, ca_bundle_path=None, client_cert_path=None, client_key_path=None)
    assert conn.proxy_url is None and conn.proxy_display is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, False),
        ("false", False),
        ("0", False),
        ("no", False),
        (True, True),
        ("True", True),
        ("on", True),
        ("", True),
        (None, True),
    ],
)
def test_verify_tls_from_the_form_a_uri_or_json(value, expected):
    assert build({"verify_tls": value}).tls.verify is expected


def test_every_tls_and_proxy_field_is_read():
    conn = build(
        {
            "ca_bundle_path": " /etc/ca.pem ",
            "client_cert_path": "/c.pem",
            "client_key_path": "/k.pem",
            "gateway_url": f"http://user:{PASSWORD}@proxy.example.com:3128",
        }
    )
    assert conn.tls == TlsSettings(True, "/etc/ca.pem", "/c.pem", "/k.pem")
    assert conn.proxy_url == f"http://user:{PASSWORD}@proxy.example.com:3128"
    assert conn.proxy_display == "http://proxy.example.com:3128"


@pytest.mark.parametrize(
    ("extra", "environment", "expected"),
    [
        (
            {"verify_tls": False},
            "live",
            "turns TLS certificate verification off (verify_tls = false) for the live environment; that is refused",
        ),
        ({"verify_tls": "maybe"}, "sandbox", "verify_tls = 'maybe' in its extra fields; give true or false"),
        (
            {"verify_tls": False, "ca_bundle_path": "/ca.pem"},
            "sandbox",
            "sets a CA bundle (ca_bundle_path) but turns verification off",
        ),
        ({"client_key_path": "/k.pem"}, "sandbox", "has a client key (client_key_path) but no client certificate"),
        (
            {"gateway_url": f"socks5://u:{PASSWORD}@proxy:1080"},
            "sandbox",
            "HTTP(S) proxy (gateway_url) that is not an http:// or https:// URL",
        ),
        (
            {"gateway_url": f"u:{PASSWORD}@proxy:3128"},
            "sandbox",
            "HTTP(S) proxy (gateway_url) that is not an http:// or https:// URL",
        ),
        ({"gateway_url": f"http://u:{PASSWORD}@proxy:99999"}, "sandbox", "and a valid port"),
        ({"gateway_url": f"http://u:{PASSWORD}@proxy:3128/path?x=1"}, "sandbox", "with a path, query or fragment"),
    ],
)
def test_settings_that_cannot_be_right_are_refused(extra, environment, expected):
    with pytest.raises(PacklyConnectionConfigError) as caught:
        build(extra, environment=environment)
    assert expected in str(caught.value)
    assert "'packly_tls'" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_verification_off_is_accepted_for_the_sandbox():
    assert build({"verify_tls": False}).tls.verify is False


def test_the_proxy_password_is_in_no_repr():
    conn = build({"gateway_url": f"http://user:{PASSWORD}@proxy.example.com:3128"})
    assert PASSWORD not in repr(conn) and PASSWORD not in str(conn)


def test_connections_differing_only_in_tls_or_proxy_are_different_keys():
    """The shared async clients and the TLS contexts are keyed by these values."""
    a, b, c = build({}), build({"ca_bundle_path": "/ca.pem"}), build({"gateway_url": "http://proxy:3128"})
    assert len({a, b, c}) == 3 and len({a.tls, b.tls, c.tls}) == 2


# -- TLS failures: the message and the retry decision share one rule -----------------------------


def _wrapped(error: ssl.SSLError) -> httpx.ConnectError:
    """As httpx raises it: httpx.ConnectError from httpcore.ConnectError from the ssl error."""
    try:
        try:
            raise error
        except ssl.SSLError as inner:
            raise httpx.ConnectError(str(inner)) from inner
    except httpx.ConnectError as outer:
        return outer


def _request() -> httpx.Request:
    return httpx.Request("POST", "https://api.packly.io/v1/oauth2/token")


def test_an_untrusted_certificate_is_not_retried_and_says_what_to_set():
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate in certificate chain"
    exc = _wrapped(error)
    assert RetryPolicy().reason(_request(), exc) is None
    assert RetryPolicy().reason(_request(), httpx.ConnectError("refused")) is not None  # the usual rule stays
    assert str(transport_error(exc, _request())) == (
        "POST https://api.packly.io/v1/oauth2/token failed: the server's TLS certificate could not be verified "
        "(CERTIFICATE_VERIFY_FAILED: self-signed certificate in certificate chain); if Packly is reached through a "
        "private CA or a TLS-inspecting proxy, set the connection's ca_bundle_path to that CA's PEM file."
    )


def test_a_handshake_refused_for_want_of_a_client_certificate_is_not_retried():
    error = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    error.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    exc = _wrapped(error)
    assert RetryPolicy().reason(_request(), exc) is None
    message = str(transport_error(exc, _request(), proxy="http://proxy.example.com:3128"))
    assert re.search(
        r"failed through the proxy http://proxy.example.com:3128: the server refused the TLS handshake "
        r"\(TLSV13_ALERT_CERTIFICATE_REQUIRED\).*set the connection's client_cert_path",
        message,
    )
