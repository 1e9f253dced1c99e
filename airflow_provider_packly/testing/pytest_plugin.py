"""The provider's pytest plugin: test your own DAGs against a local Packly sandbox, offline.

Registered through the ``pytest11`` entry point (name ``packly``; ``-p no:packly`` turns it
off), so installing the provider is enough. Every fixture is opt-in: a test gets one by naming
it, nothing is autouse, and importing this module imports neither Airflow nor the sandbox.

Fixtures (see docs/testing.md):

* ``packly_sandbox_config``: the :class:`~airflow_provider_packly.sandbox.SandboxConfig` the
  sandbox starts with (orders move one status every 0.5 s); override it in your conftest.
* ``packly_sandbox``: a fresh sandbox for the test on a free loopback port, a
  :class:`~airflow_provider_packly.testing.sandbox.PacklyTestSandbox` (clock, seeded orders,
  credentials, counters).
* ``packly_conn_id``: the connection id to set, ``packly_default``; override it if your DAGs
  use another.
* ``packly_connection``: sets ``AIRFLOW_CONN_<ID>`` to the sandbox for the test (hooks,
  operators, sensors, triggers and ``dag.test()`` all read it) and returns the sandbox.
* ``packly_airflow_home``: once per session, the Airflow home with its database created.
* ``packly_dag_test``: a function that runs a DAG with ``dag.test()`` against the sandbox and
  returns a :class:`~airflow_provider_packly.testing.dag_runs.DagTestResult`.

Ini option ``packly_airflow_home = isolated``: point ``AIRFLOW_HOME`` at a throwaway folder
before any conftest or test module imports Airflow (when ``AIRFLOW_HOME`` is not already set).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_provider_packly.sandbox.config import SandboxConfig
    from airflow_provider_packly.testing.dag_runs import DagTestResult
    from airflow_provider_packly.testing.sandbox import PacklyTestSandbox

INI_AIRFLOW_HOME = "packly_airflow_home"

#: How fast the sandbox's orders move in tests: one status every half second, so a deferred
#: sensor waiting on ORD-0001 sees it ``closed`` about 2 s after it first looked.
TEST_ORDER_STEP_SECONDS = 0.5

DagTest = Callable[..., "DagTestResult"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ini option ``packly_airflow_home``."""
    parser.addini(
        INI_AIRFLOW_HOME,
        help=(
            "'isolated': set AIRFLOW_HOME to a throwaway folder at pytest start, before any test "
            "module imports Airflow (unless AIRFLOW_HOME is already set). Default: leave it alone."
        ),
        default="",
    )


def _isolate_if_asked(config: pytest.Config) -> None:
    value = str(config.getini(INI_AIRFLOW_HOME) or "").strip().lower()
    if not value:
        return
    if value != "isolated":
        raise pytest.UsageError(f"{INI_AIRFLOW_HOME} = {value!r}: the only value it takes is 'isolated'")
    if os.environ.get("AIRFLOW_HOME"):
        return  # yours (or already isolated): left as it is
    from airflow_provider_packly.testing.dag_runs import isolate_airflow_home

    isolate_airflow_home(Path(tempfile.mkdtemp(prefix="packly-pytest-airflow-home-")))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Honour ``packly_airflow_home = isolated`` before conftest files (which may import Airflow) load."""
    _isolate_if_asked(early_config)


def pytest_configure(config: pytest.Config) -> None:
    """Honour the ini option when the plugin was loaded too late for the hook above (``pytest_plugins``)."""
    _isolate_if_asked(config)


@pytest.fixture
def packly_sandbox_config() -> SandboxConfig:
    """The sandbox's configuration; override this fixture to change it (its clock is replaced)."""
    from airflow_provider_packly.sandbox.config import SandboxConfig

    return SandboxConfig(order_step_seconds=TEST_ORDER_STEP_SECONDS)


@pytest.fixture
def packly_sandbox(packly_sandbox_config: SandboxConfig) -> Iterator[PacklyTestSandbox]:
    """A fresh Packly sandbox for this test, on a free loopback port, stopped afterwards."""
    from airflow_provider_packly.testing.sandbox import start_test_sandbox

    with start_test_sandbox(packly_sandbox_config) as sandbox:
        yield sandbox


@pytest.fixture
def packly_conn_id() -> str:
    """The Airflow connection id ``packly_connection`` sets; override it if your DAGs use another."""
    return "packly_default"


@pytest.fixture
def packly_connection(
    packly_sandbox: PacklyTestSandbox, packly_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> PacklyTestSandbox:
    """Point the connection ``packly_conn_id`` at this test's sandbox (``AIRFLOW_CONN_...``); return the sandbox."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{packly_conn_id.upper()}", packly_sandbox.connection_json())
    return packly_sandbox


@pytest.fixture(scope="session")
def packly_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Once per session: the Airflow home (a throwaway one unless you set yours), database created."""
    from airflow_provider_packly.testing.dag_runs import AirflowHomeError, prepare_airflow_home

    try:
        return prepare_airflow_home(tmp_path_factory.mktemp("packly-airflow-home"))
    except AirflowHomeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def packly_dag_test(packly_airflow_home: Path, packly_connection: PacklyTestSandbox) -> DagTest:
    """A function that runs a DAG with ``dag.test()`` against this test's sandbox.

    ``packly_dag_test(dag, run_conf=None, logical_date=None)`` returns a ``DagTestResult``
    (``state``, ``task_states``, ``xcom(task_id)``).
    """
    from airflow_provider_packly.testing.dag_runs import run_dag

    def run(dag: DAG, *, run_conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> DagTestResult:
        return run_dag(dag, run_conf=run_conf, logical_date=logical_date)

    return run


__all__ = [
    "packly_airflow_home",
    "packly_conn_id",
    "packly_connection",
    "packly_dag_test",
    "packly_sandbox",
    "packly_sandbox_config",
]
