"""The triggerer benchmark's shared-scan row, small: requests per interval bounded by the pages."""

from __future__ import annotations

from benchmarks.triggerer import shared_scan_row


def test_shared_scan_row_counts_pages_not_triggers():
    row = shared_scan_row(triggers=40, orders=400, page_size=50)
    assert row["pages"] == 8
    assert row["after"]["answered"] == row["before"]["answered"] == 40
    assert row["after"]["requests_per_interval"] <= row["pages"] + 1
    assert row["before"]["requests_per_interval"] > 10 * row["after"]["requests_per_interval"]
