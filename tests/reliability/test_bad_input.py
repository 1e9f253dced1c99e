"""Every row of the bad-input table (scripts/bad_input.py): a clear, typed error and no secret."""

from __future__ import annotations

import pytest

from scripts.bad_input import CASES, SECRETS, run_case


def test_the_table_is_large_enough_and_covers_each_group():
    assert len(CASES) >= 20
    assert {case.group for case in CASES} == {"token", "connection", "api"}


@pytest.mark.parametrize("case", CASES, ids=[f"{case.group}: {case.name}" for case in CASES])
def test_bad_input_gives_a_clear_error_and_leaks_nothing(case):
    outcome = run_case(case)
    assert not outcome.leaked, outcome.message
    if case.expect is None:
        assert outcome.error_type == "accepted", outcome.message
    else:
        assert outcome.error_type.startswith("Packly"), outcome.message
        assert case.expect in outcome.message


def test_the_leak_check_itself_finds_a_leak():
    from scripts.bad_input import Case, PacklyError

    def leaky():
        raise PacklyError(f"oops {SECRETS[0]}")

    assert run_case(Case("api", "leaky", leaky, "oops")).leaked
