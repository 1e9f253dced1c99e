"""docs/reliability.md states numbers and names tests: they must be the code's and exist."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_provider_packly._http.masking import MAX_MASKED_TOKENS
from airflow_provider_packly.auth import REFRESH_BACKOFF_SECONDS
from scripts.bad_input import CASES

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "reliability.md").read_text()


def _one(pattern: str) -> str:
    found = re.findall(pattern, DOC)
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_the_documented_masker_cap_is_the_constant():
    assert int(_one(r"At most (\d+) tokens per process are registered with the masker")) == MAX_MASKED_TOKENS
    assert "(`MAX_MASKED_TOKENS` in\n  `_http/masking.py`)" in DOC


def test_the_documented_refresh_back_off_is_the_constant():
    assert float(_one(r"no new refresh is tried for a back-off of (\d+) s")) == REFRESH_BACKOFF_SECONDS


def test_the_documented_bad_input_count_is_the_table():
    assert int(_one(r"`\./dev bad-input` prints (\d+) malformed inputs")) == len(CASES)


def test_every_test_file_the_doc_names_exists():
    named = set(re.findall(r"`(tests/[\w/]+\.py)`", DOC))
    assert len(named) >= 8
    assert sorted(path for path in named if not (ROOT / path).is_file()) == []
