from __future__ import annotations

import json
import re

import pytest

from airflow_provider_packly.connection import LIVE_BASE_URL, PacklyConnection
from airflow_provider_packly.exceptions import PacklyConnectionConfigError

from ..conftest import CLIENT_SECRET


def from_fields(host: str | None = "http://127.0.0.1:8089", extra: dict | None = None, **fields: str | None):
    return PacklyConnection.from_fields(
        login=fields.get("login", "cid"),
        password=fields.get("password", "secret"),
        host=host,
        extra=extra if extra is not None else {"environment": "sandbox"},
        conn_id="packly_test",
    )


def test_defaults_and_normalised_base_url():
    conn = from_fields(host="http://localhost:8089/")
    assert conn.base_url == "http://localhost:8089"
    assert conn.token_url == "http://localhost:8089/v1/oauth2/token"
    assert (conn.scope, conn.timeout, conn.token_refresh_margin, conn.default_expires_in) == (
        "external",
        30.0,
        60.0,
        300,
    )


def test_live_without_base_url_uses_documented_host():
    conn = from_fields(host=None, extra={"environment": "live"})
    assert conn.base_url == LIVE_BASE_URL


def test_host_without_scheme_means_https_and_trailing_v1_is_dropped():
    assert from_fields(host="api.packly.io/v1/", extra={"environment": "live"}).base_url == LIVE_BASE_URL


def test_extra_fields_with_legacy_prefix_and_form_strings():
    conn = from_fields(
        extra={
            "extra__packly__environment": "LIVE",
            "scope": "",
            "timeout": "12.5",
            "refresh_margin_seconds": 5,
            "default_expires_in": "120",
        },
        host="https://sandbox.example.com",
    )
    assert (conn.environment, conn.scope, conn.timeout, conn.token_refresh_margin, conn.default_expires_in) == (
        "live",
        "external",
        12.5,
        5.0,
        120,
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"login": None}, "has no client ID: put the Packly client ID"),
        ({"login": "  "}, "has no client ID"),
        ({"password": None}, "has no client secret"),
        ({"extra": {"environment": "production"}}, "environment 'production'; use 'sandbox' or 'live'"),
        ({"host": None}, "sandbox environment but has no Base URL"),
        ({"host": "ftp://files.example.com"}, "is not an http(s) URL"),
        ({"host": "http://api.packly.io"}, "plain http would send the client secret unencrypted"),
        ({"host": "http://10.0.0.5:8089"}, "plain http would send the client secret unencrypted"),
        ({"host": "https://user:pw@api.packly.io"}, "credentials inside its Base URL"),
        ({"host": "https://api.packly.io?x=1"}, "query or fragment"),
        ({"extra": {"environment": "sandbox", "timeout": "soon"}}, "timeout = 'soon'"),
        ({"extra": {"environment": "sandbox", "timeout": 0}}, "timeout = 0.0; give a number of seconds above 0"),
        ({"extra": {"environment": "sandbox", "refresh_margin_seconds": -1}}, "refresh_margin_seconds -1.0"),
    ],
)
def test_each_bad_setting_is_named(kwargs, expected):
    with pytest.raises(PacklyConnectionConfigError) as caught:
        from_fields(**kwargs)
    assert expected in str(caught.value)
    assert "'packly_test'" in str(caught.value)
    assert "secret" not in str(caught.value).replace("client secret", "").replace("Client Secret", "")


@pytest.mark.parametrize("host", ["http://127.0.0.1:8089", "http://127.8.9.1", "http://localhost", "http://[::1]:8089"])
def test_plain_http_allowed_only_to_loopback(host):
    assert from_fields(host=host).base_url.startswith("http://")


def test_timeouts_and_retry_settings_from_extra_fields():
    conn = from_fields(
        extra={
            "environment": "sandbox",
            "timeout": 20,
            "read_timeout": "90",
            "pool_timeout": 5,
            "retry_max_attempts": "3",
            "retry_max_seconds": 10,
            "retry_backoff_seconds": 0.2,
            "retry_backoff_max_seconds": 4,
            "retry_after_max_seconds": 30,
        }
    )
    assert conn.phase_timeouts() == {"connect": 20.0, "read": 90.0, "write": 20.0, "pool": 5.0}
    assert (conn.retry_max_attempts, conn.retry_max_seconds, conn.retry_backoff_seconds) == (3, 10.0, 0.2)
    assert (conn.retry_backoff_max_seconds, conn.retry_after_max_seconds) == (4.0, 30.0)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"retry_max_attempts": 0}, "retry_max_attempts 0; give a whole number, 1 or more"),
        ({"retry_max_attempts": "2.5"}, "retry_max_attempts = '2.5' in its extra fields; give a whole number"),
        ({"retry_max_seconds": -1}, "retry_max_seconds -1.0; use 0 or more seconds"),
        ({"read_timeout": 0}, "read_timeout = 0.0; give a number of seconds above 0"),
    ],
)
def test_bad_retry_or_timeout_settings_are_named(extra, expected):
    with pytest.raises(PacklyConnectionConfigError, match=re.escape(expected)):
        from_fields(extra={"environment": "sandbox", **extra})


def test_repr_hides_the_secret(make_connection):
    conn = make_connection()
    assert CLIENT_SECRET not in repr(conn)
    assert CLIENT_SECRET not in str(conn)


def test_from_airflow_connection_given_as_environment_variable(monkeypatch):
    from airflow.sdk import BaseHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_PACKLY_ENVVAR",
        json.dumps(
            {
                "conn_type": "packly",
                "login": "env-id",
                "password": "env-secret",
                "host": "http://127.0.0.1:8089",
                "extra": {"environment": "sandbox", "timeout": 7},
            }
        ),
    )
    conn = PacklyConnection.from_airflow(BaseHook.get_connection("packly_envvar"))
    assert (conn.client_id, conn.client_secret, conn.base_url, conn.timeout, conn.conn_id) == (
        "env-id",
        "env-secret",
        "http://127.0.0.1:8089",
        7.0,
        "packly_envvar",
    )
