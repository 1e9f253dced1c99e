"""The scale-out run needs ``./dev cluster`` (which sets ``PACKLY_CLUSTER=1``).

Its test (test_scale_out.py) is marked ``cluster``. It needs PostgreSQL and Redis from Debian's
packages and the ``cluster`` dependency group, so the pytest runs of ``./dev test`` and
``./dev test-latest`` skip it with that reason; ``./dev test`` (CI) then runs it as its last
step, through ``./dev cluster`` (about 12 min on two busy cores: docs/scale.md). Under
``./dev cluster`` a missing prerequisite fails instead of skipping. test_socket_check.py (the
shared-socket check can fail; a second, no services) runs everywhere.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

import pytest

from .cluster import missing_services

REQUESTED = os.environ.get("PACKLY_CLUSTER") == "1"
NOT_REQUESTED = (
    "the scale-out suite (CeleryExecutor, PostgreSQL, Redis) runs only with ./dev cluster "
    "(./dev test runs it last): it needs system services and the 'cluster' dependency group"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    scale_out = Path(__file__).parent / "test_scale_out.py"
    for item in items:
        if Path(str(item.fspath)) == scale_out:
            item.add_marker(pytest.mark.cluster)
            if not REQUESTED:
                item.add_marker(pytest.mark.skip(reason=NOT_REQUESTED))


@pytest.fixture(scope="session", autouse=True)
def cluster_prerequisites() -> None:
    """Under ./dev cluster: fail, naming the fix, when a service or a package is missing."""
    if not REQUESTED:
        return
    missing = missing_services()
    if missing:
        pytest.fail(
            f"not installed: {', '.join(missing)}; run ./dev cluster as root (it installs them) or apt-get install them"
        )
    for module in ("airflow.providers.celery", "redis", "psycopg2", "asyncpg"):
        if find_spec(module.split(".")[0]) is None or (module.startswith("airflow.") and find_spec(module) is None):
            pytest.fail(f"Python package for {module} is missing: run ./dev cluster (it syncs the 'cluster' group)")
