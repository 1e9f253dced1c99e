"""The secret scan (scripts/secret_scan.py) in full: every example DAG at DEBUG, 0 hits."""

from __future__ import annotations

import pytest

from scripts.secret_scan import ScanReport, run_scan

pytestmark = pytest.mark.airflow_cli


def test_no_secret_anywhere_after_running_every_example_dag(tmp_path):
    report = run_scan(tmp_path / "scan")
    assert report.dag_failures == []
    assert report.hits == []
    assert report.tokens_issued >= 2
    assert report.debug_lines > 0, "httpx/httpcore DEBUG logging was not on"
    assert report.places["trigger payloads"] >= 1, "the order sensor did not defer: no trigger payload was scanned"
    assert report.places["XCom values"] > 0 and report.places["rendered template fields"] > 0
    assert report.ok


def test_a_leak_would_be_found():
    report = ScanReport(secrets_searched=1, tokens_issued=1, debug_lines=1)
    from scripts.secret_scan import _search

    _search(report, "somewhere", "Authorization: Bearer tok-123", {"access token #1": "tok-123"})
    assert report.hits == ["somewhere: access token #1"] and not report.ok
