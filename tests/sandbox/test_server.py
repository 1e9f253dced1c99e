"""The sandbox over real loopback HTTP: run_sandbox and the command line."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

pytestmark = pytest.mark.integration

from .helpers import ROOT, sandbox_cli

TOKEN_FORM = {"grant_type": "client_credentials", "scope": "external"}


def test_run_sandbox_on_port_zero_serves_real_http_and_stops() -> None:
    with run_sandbox(SandboxConfig(token_lifetime=60)) as sandbox:
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", sandbox.base_url)
        assert match and int(match.group(1)) != 0
        with httpx.Client(base_url=sandbox.base_url) as client:
            token_response = client.post(
                "/v1/oauth2/token",
                auth=("sandbox-client-id", "sandbox-client-secret"),
                data=TOKEN_FORM,
            )
            assert token_response.status_code == 200
            assert token_response.headers["content-encoding"] == "gzip"  # httpx asks for gzip
            token = token_response.json()["access_token"]
            assert token_response.json()["expires_in"] == 60
            orders = client.get("/v1/reseller/orders", headers={"Authorization": f"Bearer {token}"})
            assert orders.status_code == 200
            assert len(orders.json()["response"]) == 10
        assert sandbox.state is sandbox.app.state.sandbox
        assert sandbox.state.token_requests_ok == 1
        assert sandbox.state.api_requests["/v1/reseller/orders"] == 1
        base_url = sandbox.base_url
    with httpx.Client(base_url=base_url, timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.get("/_sandbox/stats")


def test_large_dieline_streams_over_http() -> None:
    padding = 8 * 1024 * 1024
    with (
        run_sandbox(SandboxConfig(dieline_padding_bytes=padding)) as sandbox,
        httpx.Client(base_url=sandbox.base_url) as client,
    ):
        token = client.post(
            "/v1/oauth2/token",
            auth=("sandbox-client-id", "sandbox-client-secret"),
            data=TOKEN_FORM,
        ).json()["access_token"]
        params = {
            "article": "s020_v1",
            "material": "SBS300",
            "width": "100",
            "depth": "50",
            "height": "30",
        }
        headers = {"Authorization": f"Bearer {token}"}
        with client.stream("GET", "/v1/reseller/dieline", params=params, headers=headers) as response:
            assert response.status_code == 200
            expected = int(response.headers["content-length"])
            chunks = [len(chunk) for chunk in response.iter_bytes()]
    assert expected > padding
    assert sum(chunks) == expected
    assert len(chunks) > 1


def test_run_sandbox_reports_a_taken_port() -> None:
    with run_sandbox() as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        with pytest.raises(RuntimeError, match="failed to start"), run_sandbox(port=port):
            pass  # pragma: no cover


def test_module_help_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_packly.sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for flag in (
        "--host",
        "--port",
        "--token-lifetime",
        "--client-id",
        "--client-secret",
        "--order-step-seconds",
        "--environment",
    ):
        assert flag in result.stdout


def test_command_line_announces_serves_and_stops_on_sigterm() -> None:
    secret = "cli-secret-never-printed"
    with sandbox_cli("--client-id", "cli-id", "--client-secret", secret, "--token-lifetime", "5") as sandbox:
        assert "client ID: cli-id" in sandbox.first_line
        with httpx.Client(base_url=sandbox.base_url) as client:
            response = client.post("/v1/oauth2/token", auth=("cli-id", secret), data=TOKEN_FORM)
            assert response.status_code == 200
            assert response.json()["expires_in"] == 5
            token = response.json()["access_token"]
    assert sandbox.process.returncode == 0, sandbox.err
    output = sandbox.first_line + sandbox.out + sandbox.err
    assert "POST /v1/oauth2/token" in output  # the access log is on...
    assert secret not in output and token not in output  # ...but shows no credentials


def test_help_documents_every_sandbox_route_and_the_seeded_orders() -> None:
    # Issue 8 item 7: --help names each /_sandbox/ endpoint the app serves and the seeded
    # orders DAGs wait on (their timelines are tested in test_app.py and test_units.py).
    from airflow_provider_packly.sandbox.__main__ import build_parser
    from airflow_provider_packly.sandbox.app import create_app

    text = build_parser().format_help()
    for route in create_app().routes:
        path = getattr(route, "path", "")
        if path.startswith("/_sandbox/"):
            for method in sorted(set(getattr(route, "methods", ())) - {"HEAD"}):
                assert f"{method} " in text and path in text, (method, path)
    for order in ("ORD-0001", "ORD-0002", "ORD-0007", "ORD-0017"):
        assert order in text
    assert "first time a listing serves it" in text
