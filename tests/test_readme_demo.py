"""The README's main command runs scripts/run_examples.py: run it as written (quickstart DAG only,
the example DAG tests cover the others), so the first command a user types is tested too."""

from __future__ import annotations

import re

import pytest

from scripts.run_examples import DAG_IDS, run_examples

pytestmark = pytest.mark.airflow_cli


def test_demo_runner_starts_the_sandbox_tests_the_connection_and_runs_a_dag(tmp_path):
    run = run_examples(tmp_path / "demo", port=0, dag_ids=DAG_IDS[:1])
    assert run.connection_ok, run.connection_test
    (dag_run,) = run.dag_runs
    assert dag_run.ok, dag_run.output[-3000:]
    (result,) = dag_run.results
    assert re.search(r"\bquotation_total=[0-9.]+", result) and re.search(r"\borders=\d+", result), result
    assert "token_ok=true" in result
    assert run.sandbox_stats["token_requests"] >= 2  # the connection test and the DAG
    assert "sandbox-client-secret" not in dag_run.output
