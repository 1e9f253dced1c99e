"""Fixtures of the real-path suite: one real Airflow and one sandbox for the whole session.

Every test here is marked ``real_airflow`` (skip locally with ``-m "not real_airflow"``). Under
CI (``CI=true``) nothing here skips silently: a missing prerequisite (chromium) fails. On the
floor leg (Airflow 3.2.x, ``.venv-floor``) the suite is skipped with its reason printed: it
proves the real user path on the locked release, which the floor leg's other tests cannot
replace, and running it twice would double CI's longest step for no new defect class (the
floor leg's own suite already runs every example DAG with ``airflow dags test``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from .harness import COMPONENTS, ControlledClock, Harness, Sandbox, serve_sandbox, wait_for

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"


def airflow_is_floor() -> bool:
    major, minor = (int(part) for part in version("apache-airflow").split(".")[:2])
    return (major, minor) < (3, 3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    floor = airflow_is_floor()
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real_airflow)
            if floor:
                item.add_marker(
                    pytest.mark.skip(
                        reason="real-Airflow suite runs on the locked Airflow 3.3.x leg only"
                        f" (this is {version('apache-airflow')}, the floor leg)"
                    )
                )


def require_chromium() -> Path:
    """The system browser, or a failure under CI / a skip with the fix elsewhere."""
    if CHROMIUM.exists() or shutil.which("chromium"):
        return CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
    message = "Debian's chromium is not installed: run ./dev test as root (it installs it) or apt-get install chromium"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with serve_sandbox(ControlledClock()) as running:
        yield running


@pytest.fixture(scope="session")
def real_airflow(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """api-server, scheduler, dag-processor and triggerer on loopback; stopped by PID at the end."""
    harness = Harness(tmp_path_factory.mktemp("real-airflow"), sandbox)
    try:
        migrated = harness.airflow("db", "migrate", timeout=300)
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        for role in COMPONENTS:
            harness.start(role)

        def healthy() -> bool:
            for component in harness.components:
                if component.process.poll() is not None:
                    raise RuntimeError(
                        f"airflow {component.role} (PID {component.pid}) exited with {component.process.returncode}:"
                        f" {component.log.read_text(errors='replace')[-3000:]}"
                    )
            health = harness.health()
            return bool(health) and all(
                (health or {}).get(part, {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            )

        wait_for("Airflow's health endpoint to report every component healthy", healthy, 180, 1.0)
        yield harness
    finally:
        harness.close()
        harness.stop_all()


@pytest.fixture(scope="session")
def example_files() -> list[Path]:
    from .harness import EXAMPLE_DAGS

    files = sorted(EXAMPLE_DAGS.glob("*.py"))
    assert files, "no example DAG files found"
    return files
