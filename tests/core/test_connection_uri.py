"""URI connections: ``host``, ``port`` and ``schema`` arrive split, and all three must count.

``AIRFLOW_CONN_X='packly://id:secret@127.0.0.1:8089'`` used to make the hook call
``https://127.0.0.1/v1/oauth2/token``: the port was dropped and the scheme guessed.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import anyio
import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyConnectionConfigError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

SANDBOX_ID = "sandbox-client-id"
SANDBOX_SECRET = "sandbox-client-secret"


def build(host, port=None, schema=None, environment="sandbox") -> PacklyConnection:
    return PacklyConnection.from_fields(
        login="cid",
        password="secret",
        host=host,
        port=port,
        schema=schema,
        extra={"environment": environment},
        conn_id="packly_uri",
    )


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        ("127.0.0.1", 8089, "http", "http://127.0.0.1:8089"),
        ("127.0.0.1", 8089, None, "https://127.0.0.1:8089"),  # no schema: https, never http by guess
        ("127.0.0.1", "8089", "HTTP", "http://127.0.0.1:8089"),
        ("api.packly.io", None, None, "https://api.packly.io"),
        ("api.packly.io", None, "https", "https://api.packly.io"),
        ("api.packly.io/base", 8443, "https", "https://api.packly.io:8443/base"),
        ("::1", 8089, "http", "http://[::1]:8089"),
        # A host URL and a port field (how Airflow's own Connection.get_uri() round trip splits it).
        ("http://127.0.0.1", 8089, None, "http://127.0.0.1:8089"),
        ("http://127.0.0.1:8089", 8089, "http", "http://127.0.0.1:8089"),
        # Port 0 or empty is "no port" (the UI sends 0 for an empty port field).
        ("http://127.0.0.1:8089", 0, "", "http://127.0.0.1:8089"),
        ("https://api.packly.io", 0, None, "https://api.packly.io"),
        ("https://api.packly.io", "", None, "https://api.packly.io"),
    ],
)
def test_host_port_and_schema_make_one_base_url(host, port, schema, expected):
    assert build(host, port, schema).base_url == expected


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        ("127.0.0.1", 8089, "ftp", "schema 'ftp'; the schema of a Packly connection is the URL scheme"),
        ("127.0.0.1", 8089, "postgres", "schema 'postgres'"),
        ("127.0.0.1", 70000, "http", "port 70000; give a whole number from 1 to 65535"),
        ("127.0.0.1", -1, "http", "port -1; give a whole number from 1 to 65535"),
        ("127.0.0.1", "eighty", "http", "port 'eighty'"),
        ("http://127.0.0.1:8089", 9090, None, "port 8089 in its Base URL but 9090 in its port field"),
        ("https://api.packly.io", None, "http", "starting with 'https://' but schema 'http'; they disagree"),
        ("http://127.0.0.1:99999", None, None, "whose port is not a number from 1 to 65535"),
        ("http://127.0.0.1:0", None, None, "whose port is not a number from 1 to 65535"),
        (None, 8089, None, "has a port or schema but no Base URL"),
        ("10.0.0.5", 8089, "http", "plain http would send the client secret unencrypted"),
    ],
)
def test_what_cannot_be_right_is_refused_with_the_reason(host, port, schema, expected):
    with pytest.raises(PacklyConnectionConfigError) as caught:
        build(host, port, schema)
    assert expected in str(caught.value)
    assert "'packly_uri'" in str(caught.value)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("packly://id:secret@127.0.0.1:8089", "https://127.0.0.1:8089"),
        ("packly://id:secret@127.0.0.1:8089/http", "http://127.0.0.1:8089"),
        ("packly://id:secret@127.0.0.1:8089/http?environment=sandbox&timeout=5", "http://127.0.0.1:8089"),
        ("packly://id:secret@api.packly.io?environment=live", "https://api.packly.io"),
        ("packly://id:secret@[::1]:8089/http", "http://[::1]:8089"),
        ("packly://id:secret@?environment=live", "https://api.packly.io"),
    ],
)
def test_uri_connection_through_airflow(monkeypatch, uri, expected):
    """The real parser: an ``AIRFLOW_CONN_*`` URI read by ``BaseHook.get_connection``."""
    from airflow.sdk import BaseHook

    monkeypatch.setenv("AIRFLOW_CONN_PACKLY_URI", uri)
    conn = PacklyConnection.from_airflow(BaseHook.get_connection("packly_uri"))
    assert (conn.base_url, conn.client_id, conn.client_secret) == (expected, "id", "secret")


@pytest.mark.parametrize(
    "fields",
    [
        {"host": "http://127.0.0.1:8089"},
        {"host": "http://127.0.0.1", "port": 8089},
        {"host": "127.0.0.1", "port": 8089, "schema": "http"},
        {"host": "http://127.0.0.1:8089", "port": 0},
    ],
)
def test_connection_survives_airflows_uri_round_trip(monkeypatch, fields):
    """Airflow's connection test (REST API, UI, worker) hands the hook ``Connection.get_uri()``
    of the connection under test in an ``AIRFLOW_CONN_*`` variable: the address must survive."""
    from airflow.sdk import BaseHook, Connection

    original = Connection(conn_id="packly_rt", conn_type="packly", login="id", password="p@ss:/word", **fields)
    monkeypatch.setenv("AIRFLOW_CONN_PACKLY_RT", original.get_uri())
    conn = PacklyConnection.from_airflow(BaseHook.get_connection("packly_rt"))
    assert (conn.base_url, conn.client_secret) == ("http://127.0.0.1:8089", "p@ss:/word")


@pytest.mark.integration
def test_hook_with_a_uri_connection_gets_a_token_on_a_non_default_port(monkeypatch):
    """End to end: URI in ``AIRFLOW_CONN_*`` -> hook -> sandbox on a free (non-default) port."""
    with run_sandbox(SandboxConfig()) as sandbox:
        port = int(sandbox.base_url.rsplit(":", 1)[1])
        assert port not in (80, 443, 8089)
        uri = f"packly://{SANDBOX_ID}:{quote(SANDBOX_SECRET, safe='')}@127.0.0.1:{port}/http?environment=sandbox"
        monkeypatch.setenv("AIRFLOW_CONN_PACKLY_URI", uri)
        with PacklyHook("packly_uri") as hook:
            assert hook.get_conn().token_url == f"http://127.0.0.1:{port}/v1/oauth2/token"
            assert hook.get_token()
            orders = list(hook.iter_orders(limit=5))
        assert orders and sandbox.state.token_requests == 1

        async def call_async() -> list:
            async with PacklyHook("packly_uri") as hook:
                return [order async for order in hook.aiter_orders(limit=5)]

        assert anyio.run(call_async) == orders
        assert sandbox.state.token_requests == 1  # the async hook shared the cached token


@pytest.mark.integration
def test_json_connection_tested_as_airflow_tests_it(monkeypatch):
    """A JSON-form connection with the port inside its Base URL, as Airflow's connection test
    passes it on (``get_uri()`` splits host and port): the test reaches the sandbox."""
    from airflow.sdk import Connection

    with run_sandbox(SandboxConfig()) as sandbox:
        stored = json.dumps(
            {
                "conn_type": "packly",
                "login": SANDBOX_ID,
                "password": SANDBOX_SECRET,
                "host": sandbox.base_url,
                "extra": {"environment": "sandbox"},
            }
        )
        copy = Connection.from_json(stored, conn_id="Ab3dE5gH")
        monkeypatch.setenv("AIRFLOW_CONN_AB3DE5GH", copy.get_uri())
        ok, message = PacklyHook("Ab3dE5gH").test_connection()
        assert ok, message
        assert sandbox.state.token_requests == 1


def test_readme_uri_examples_mean_what_the_readme_says(monkeypatch):
    """The README's URI lines, parsed by Airflow and read by the provider."""
    import re
    from pathlib import Path

    from airflow.sdk import BaseHook

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    uris = dict(re.findall(r"export (AIRFLOW_CONN_\w+)='(packly://[^']+)'", readme))
    assert set(uris) == {"AIRFLOW_CONN_PACKLY_DEFAULT", "AIRFLOW_CONN_PACKLY_LIVE"}
    expected = {
        "packly_default": ("http://127.0.0.1:8089", "sandbox"),
        "packly_live": ("https://api.packly.io", "live"),
    }
    for variable, uri in uris.items():
        monkeypatch.setenv(variable, uri.replace("<client id>", "cid").replace("<secret>", quote("s3cr/t:@", safe="")))
        conn_id = variable.removeprefix("AIRFLOW_CONN_").lower()
        conn = PacklyConnection.from_airflow(BaseHook.get_connection(conn_id))
        assert (conn.base_url, conn.environment, conn.client_secret) == (*expected[conn_id], "s3cr/t:@")
