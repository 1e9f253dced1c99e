"""What ``PacklyHook.test_connection`` says when Airflow tests a connection.

Airflow's REST API and UI test a *copy* of the connection: the route stores it under
``get_random_string()`` in an ``AIRFLOW_CONN_*`` variable (``Connection.get_uri()``) and calls
``Connection.test_connection()``, which builds the hook with that random id. Messages naming
the id would name something the user has never seen.
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

SANDBOX_ID = "sandbox-client-id"
SANDBOX_SECRET = "sandbox-client-secret"


def test_as_airflow_tests_it(monkeypatch, **fields) -> tuple[bool, str, str]:
    """Test a connection the way Airflow's ``POST /api/v2/connections/test`` route does."""
    from airflow.models.connection import Connection
    from airflow.utils.strings import get_random_string

    transient_conn_id = get_random_string()
    conn = Connection(conn_id=transient_conn_id, conn_type="packly", **fields)
    monkeypatch.setenv(f"AIRFLOW_CONN_{transient_conn_id.upper()}", conn.get_uri())
    status, message = conn.test_connection()
    return status, message, transient_conn_id


test_as_airflow_tests_it.__test__ = False  # a helper, not a test


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"extra": json.dumps({"environment": "production"})}, "environment 'production'; use 'sandbox' or 'live'"),
        ({"extra": json.dumps({"environment": "sandbox", "timeout": "soon"})}, "timeout = 'soon'"),
        ({"host": None, "extra": json.dumps({"environment": "sandbox"})}, "sandbox environment but has no Base URL"),
        ({"schema": "ftp"}, "schema 'ftp'"),
        ({"password": None}, "has no client secret"),
    ],
)
def test_failure_messages_do_not_name_the_throwaway_id(monkeypatch, fields, reason):
    settings = {
        "login": "cid",
        "password": "secret",
        "host": "http://127.0.0.1:8089",
        "extra": '{"environment": "sandbox"}',
    }
    settings.update(fields)
    status, message, transient_conn_id = test_as_airflow_tests_it(monkeypatch, **settings)
    assert status is False
    assert reason in message
    assert message.startswith("The Packly connection ")
    assert transient_conn_id not in message and transient_conn_id.lower() not in message


@pytest.mark.integration
def test_success_and_refusal_messages_do_not_name_the_throwaway_id(monkeypatch):
    with run_sandbox(SandboxConfig()) as sandbox:
        common = {"login": SANDBOX_ID, "host": sandbox.base_url, "extra": '{"environment": "sandbox"}'}
        status, message, transient_conn_id = test_as_airflow_tests_it(monkeypatch, password=SANDBOX_SECRET, **common)
        assert status is True, message
        assert message.startswith(f"Packly sandbox environment at {sandbox.base_url} issued an access token")
        assert transient_conn_id not in message

        status, message, transient_conn_id = test_as_airflow_tests_it(monkeypatch, password="wrong-secret-Q7", **common)
        assert status is False
        assert SANDBOX_ID in message and "wrong-secret-Q7" not in message
        assert transient_conn_id not in message
        assert sandbox.state.token_requests == 2


def test_outside_a_connection_test_errors_still_name_the_connection(monkeypatch):
    """Only the connection test drops the id: a task's error names the connection to fix."""
    from airflow_provider_packly.exceptions import PacklyConnectionConfigError
    from airflow_provider_packly.hooks.packly import PacklyHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_PACKLY_NAMED",
        json.dumps({"conn_type": "packly", "login": "cid", "password": "pw", "extra": {"environment": "production"}}),
    )
    with pytest.raises(PacklyConnectionConfigError, match="Packly connection 'packly_named' has environment"):
        PacklyHook("packly_named").get_conn()
