"""Airflow's own connection test, as the UI, the REST API and the CLI run it, against the sandbox.

Proves what the README says about testing a connection: the REST API returns the provider's
message (environment, Base URL, client ID, expiry); the CLI prints only ``Connection success!``
(or ``Connection failed!`` and the provider's message); no message names the random id the
REST route tests under; and the "Troubleshooting" entry for the UI's Test button on Airflow
3.3.2 (``port: 0``, apache/airflow#73298) with its workarounds.

Slow (a fresh metadata DB and Airflow's API app in a subprocess, about 20 s): marked
``airflow_cli`` with the other tests that run Airflow's command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

pytestmark = [pytest.mark.integration, pytest.mark.airflow_cli]

SCRIPT = Path(__file__).with_name("airflow_connection_test_api.py")
SECRET = "sandbox-client-secret"
ISSUED = (
    "Packly sandbox environment at {base_url} issued an access token to client ID 'sandbox-client-id', valid until "
)


@pytest.fixture(scope="module")
def api_results(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    with run_sandbox(SandboxConfig()) as sandbox:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__API_AUTH__JWT_SECRET": "packly-test-jwt-secret-" + "x" * 48,
                "PACKLY_SANDBOX_URL": sandbox.base_url,
                "PACKLY_SECRET": SECRET,
            }
        )
        completed = subprocess.run(
            [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULTS "))
        results = json.loads(line.removeprefix("RESULTS "))
        results["base_url"] = sandbox.base_url
        results["token_requests"] = sandbox.state.token_requests
        yield results


def _ok(answer: dict, base_url: str) -> str:
    assert answer["status_code"] == 200, answer
    assert answer["body"]["status"] is True, answer
    message = answer["body"]["message"]
    assert message.startswith(ISSUED.format(base_url=base_url)), message
    return message


def test_rest_api_returns_the_providers_message_without_an_id(api_results):
    message = _ok(api_results["rest_saved_no_port"], api_results["base_url"])
    assert "packly_stored" not in message and "connection '" not in message


def test_ui_add_form_test_with_port_0_works(api_results):
    _ok(api_results["ui_new"], api_results["base_url"])
    bad = api_results["ui_new_bad_setting"]
    assert bad["status_code"] == 200 and bad["body"]["status"] is False
    assert bad["body"]["message"].startswith("The Packly connection has environment 'prod'"), bad


def test_ui_test_button_on_a_saved_connection_and_its_workaround(api_results):
    """Airflow 3.3.2 answers 400 (apache/airflow#73298); 3.2 merges the stored secret and port 0
    is no port here. Retyping the Client Secret works on both."""
    answer = api_results["ui_saved"]
    if api_results["airflow"] == "3.3.2":
        assert answer["status_code"] == 400, answer
        assert "The host or port to test differs from the stored connection" in answer["body"]["detail"]
    else:
        _ok(answer, api_results["base_url"])
    _ok(api_results["ui_saved_secret_retyped"], api_results["base_url"])


def test_cli_prints_only_success_or_the_failure_message(api_results):
    success = api_results["cli_packly_stored"]
    assert success["exit"] in (0, None) and "Connection success!" in success["output"]
    assert "issued an access token" not in success["output"]  # the hook's message is not shown
    failure = api_results["cli_packly_wrong"]
    assert "Connection failed!" in failure["output"]  # exit status 1 on 3.3; 3.2's CLI exits 0
    assert "sandbox-client-id" in failure["output"] and "wrong-secret-Q7" not in failure["output"]
