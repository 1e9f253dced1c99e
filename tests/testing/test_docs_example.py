"""docs/testing.md's example, run exactly as written: a user's project in a fresh pytest process.

Every fenced block of the page whose first line is ``# <path>`` is written to that path in an
empty folder, which then looks like a user's project (a DAG folder, a pytest configuration,
tests). A fresh ``python -m pytest`` runs there, without this repository's conftest and without
an AIRFLOW_HOME, so the plugin is found through its ``pytest11`` entry point and sets up Airflow
itself, as it would for a user.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "testing.md"
FILE_BLOCK = re.compile(r"```(?:python|toml)\n# (?P<path>[\w./-]+)\n(?P<body>.*?)```", re.DOTALL)

pytestmark = pytest.mark.skipif(not PAGE.exists(), reason="docs/testing.md is not shipped in the sdist")


def project_files() -> dict[str, str]:
    """The files the page shows, by path, with the ``# path`` line kept as written."""
    text = PAGE.read_text()
    return {match["path"]: f"# {match['path']}\n{match['body']}" for match in FILE_BLOCK.finditer(text)}


def test_the_page_shows_a_dag_a_configuration_and_tests():
    files = project_files()
    assert set(files) == {"dags/packly_orders.py", "pyproject.toml", "tests/test_packly_orders.py"}
    assert "deferrable=True" in files["dags/packly_orders.py"]
    assert 'packly_airflow_home = "isolated"' in files["pyproject.toml"]


def test_the_docs_example_passes_as_written(tmp_path):
    for relative, content in project_files().items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    # A user's shell: none of this suite's Airflow settings (AIRFLOW_HOME, connections).
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    assert re.search(r"\b3 passed\b", done.stdout), output
    # The throwaway Airflow home was used, not ~/airflow: nothing was created in the project either.
    assert not (tmp_path / "airflow.db").exists()
