"""The pytest plugin's parts: the sandbox clock, order controls, the connection, the Airflow home rule.

The full path (a user's DAG run with ``dag.test()``) is tests/testing/test_docs_example.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig
from airflow_provider_packly.testing.sandbox import SandboxClock, order_number, start_test_sandbox

ROOT = Path(__file__).resolve().parents[2]


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_runs_jumps_and_freezes():
    real = FakeMonotonic()
    clock = SandboxClock(real)
    assert clock() == 100.0
    real.t = 101.0
    assert clock() == 101.0
    clock.advance(10)
    assert clock() == 111.0
    clock.freeze()
    real.t = 200.0
    assert clock() == 111.0 and clock.frozen
    clock.advance(5)
    assert clock() == 116.0
    clock.resume()
    assert clock() == 116.0 and not clock.frozen
    real.t = 201.0
    assert clock() == 117.0
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)


@pytest.mark.parametrize("bad", ["ORD-1", "ord-0001", "ORD-0000", "12", ""])
def test_order_ids_are_checked(bad):
    with pytest.raises(ValueError, match="not a sandbox order id"):
        order_number(bad)


def test_fast_forward_moves_an_order_to_a_status(monkeypatch):
    with start_test_sandbox(SandboxConfig(order_step_seconds=60)) as sandbox:
        sandbox.clock.freeze()  # steps of a minute on a frozen clock: only the controls move it
        assert sandbox.order_status("ORD-0001") == "waiting_execute_payment"
        sandbox.fast_forward_order("ORD-0001", "paid")
        assert sandbox.order_status("ORD-0001") == "paid"
        sandbox.fast_forward_order("ORD-0001", "closed")
        assert sandbox.order_status("ORD-0001") == "closed"
        with pytest.raises(ValueError, match=r"ORD-0001 is 'closed' and will not become 'paid'.*reset_clock"):
            sandbox.fast_forward_order("ORD-0001", "paid")
        sandbox.reset_clock()
        assert sandbox.order_status("ORD-0001") == "waiting_execute_payment"
        # What a listing over HTTP shows agrees with the control.
        sandbox.fast_forward_order("ORD-0003", "in_processing")
        monkeypatch.setenv("AIRFLOW_CONN_PACKLY_PLUGIN_TEST", sandbox.connection_uri())
        with PacklyHook("packly_plugin_test") as hook:
            assert hook.get_order("ORD-0003")["status"] == "in_processing"


def test_fast_forward_refuses_a_status_the_order_never_reaches():
    with start_test_sandbox(SandboxConfig(order_step_seconds=60)) as sandbox:
        sandbox.clock.freeze()
        message = r"ORD-0007 is 'waiting_execute_payment' and will not become 'closed'.*'canceled'"
        with pytest.raises(ValueError, match=message):
            sandbox.fast_forward_order("ORD-0007", "closed")
        with pytest.raises(ValueError, match="has 25 seeded orders"):
            sandbox.fast_forward_order("ORD-0099", "closed")


def test_both_connection_forms_reach_the_sandbox(monkeypatch):
    with start_test_sandbox() as sandbox:
        for form in (sandbox.connection_json(), sandbox.connection_uri()):
            monkeypatch.setenv("AIRFLOW_CONN_PACKLY_FORMS", form)
            with PacklyHook("packly_forms") as hook:
                assert hook.get_order("ORD-0017")["status"] == "closed"
        assert sandbox.state.token_requests_ok >= 1


def test_the_connection_fixture_sets_the_environment_for_the_test(packly_connection, packly_conn_id):
    assert packly_conn_id == "packly_default"
    assert os.environ["AIRFLOW_CONN_PACKLY_DEFAULT"] == packly_connection.connection_json()
    with PacklyHook() as hook:
        hook.get_token()
    assert packly_connection.state.token_requests_ok == 1


def test_revoked_tokens_are_replaced_by_the_hook(packly_connection):
    with PacklyHook() as hook:
        hook.get_order("ORD-0017")
        assert packly_connection.revoke_tokens() == 1
        assert hook.get_order("ORD-0017")["status"] == "closed"
    assert packly_connection.state.token_requests_ok == 2


def test_importing_the_plugin_imports_neither_airflow_nor_the_sandbox():
    code = (
        "import sys\n"
        "import airflow_provider_packly.testing.pytest_plugin\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'starlette', 'uvicorn')"
        " or m.startswith('airflow_provider_packly.sandbox'))\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _pytest_in(folder: Path, files: dict[str, str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, content in files.items():
        (folder / name).write_text(textwrap.dedent(content))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST_"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_isolated_sets_airflow_home_before_conftest_files_load(tmp_path):
    done = _pytest_in(
        tmp_path,
        {
            "pytest.ini": "[pytest]\npackly_airflow_home = isolated\n",
            "conftest.py": "import os\nSEEN = os.environ.get('AIRFLOW_HOME')\n",
            "test_home.py": """
                import os
                import conftest

                def test_home():
                    assert conftest.SEEN and "packly-pytest-airflow-home-" in conftest.SEEN
                    assert os.environ["AIRFLOW_HOME"] == conftest.SEEN
                    assert os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
            """,
        },
        {},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_isolated_leaves_an_airflow_home_you_set(tmp_path):
    mine = tmp_path / "my-home"
    done = _pytest_in(
        tmp_path,
        {
            "pytest.ini": "[pytest]\npackly_airflow_home = isolated\n",
            "test_home.py": f"""
                import os

                def test_home():
                    assert os.environ["AIRFLOW_HOME"] == {str(mine)!r}
            """,
        },
        {"AIRFLOW_HOME": str(mine)},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_ini_value_is_a_usage_error(tmp_path):
    done = _pytest_in(tmp_path, {"pytest.ini": "[pytest]\npackly_airflow_home = shared\n"}, {})
    assert done.returncode == 4, done.stdout + done.stderr
    assert "packly_airflow_home = 'shared': the only value it takes is 'isolated'" in done.stderr


def test_without_the_option_the_plugin_leaves_airflow_home_alone(tmp_path):
    done = _pytest_in(
        tmp_path,
        {"test_home.py": "import os\n\ndef test_home():\n    assert 'AIRFLOW_HOME' not in os.environ\n"},
        {},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_plugin_can_be_turned_off(tmp_path):
    files = {"test_off.py": "def test_off(packly_sandbox):\n    pass\n"}
    done = _pytest_in(tmp_path, files, {})
    assert done.returncode == 0, done.stdout + done.stderr
    off = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:packly"],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST_"))},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert off.returncode == 1 and "fixture 'packly_sandbox' not found" in off.stdout, off.stdout


def test_a_dag_test_refuses_to_use_the_default_airflow_home(tmp_path):
    # Airflow imported first with no AIRFLOW_HOME: it settled on ~/airflow (HOME is a temp folder
    # here); preparing the home must refuse and say how to fix it.
    code = (
        "from pathlib import Path\n"
        "import airflow.configuration\n"
        "from airflow_provider_packly.testing.dag_runs import AirflowHomeError, prepare_airflow_home\n"
        "try:\n"
        f"    prepare_airflow_home(Path({str(tmp_path / 'throwaway')!r}))\n"
        "except AirflowHomeError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "packly_airflow_home = isolated" in done.stdout
    assert not (tmp_path / "throwaway").exists()
