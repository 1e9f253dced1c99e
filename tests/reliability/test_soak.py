"""A reduced soak (1,000 calls) against the faulty sandbox: the same checks as ./dev soak."""

from __future__ import annotations

import pytest

from scripts.soak import FAULT_KINDS, run_soak

pytestmark = pytest.mark.integration


def test_reduced_soak_loses_nothing_and_duplicates_nothing():
    report = run_soak(1000, seed=11)
    assert report.faulted_share >= 0.10, report.fault_counts
    assert all(report.fault_counts.get(kind, 0) > 0 for kind in FAULT_KINDS), report.fault_counts
    assert report.lost_reads == 0
    assert report.duplicated_writes == 0
    assert report.acknowledged_not_applied == 0
    assert report.untyped_failures == 0, report.errors
    assert report.tokens_issued == 1 + report.forced_revocations
    assert report.calls_over_deadline == 0, report.slowest_call_seconds  # trickled answers end by the deadline
    assert report.forced_revocations > 0 and report.retries > 0
    assert report.unacknowledged_applied_writes > 0  # writes the sandbox applied before failing were not resent
    assert sum(report.outcomes.values()) == 1000
    assert report.secret_leaks == 0  # the echo fault's pages quote the bearer token and the Basic value


def test_the_leak_count_finds_a_leak():
    from scripts.soak import _count_leaks

    assert _count_leaks(["refused: Bearer T0k-abc", "fine"], ["T0k-abc"]) == 1
    assert _count_leaks(["fine"], ["T0k-abc"]) == 0
