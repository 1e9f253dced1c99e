"""``core.tokens`` directly: the cache's claim/settle/fall-back decisions on given times, no I/O.

The drivers (``auth.TokenCache.get``/``aget``) are tested in ``tests/test_auth.py`` and
``tests/test_token_refresh_fallback.py``; here each decision is checked on its own.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_provider_packly.core.tokens import AccessToken, TokenSlots, build_token_request, refresh_backoff
from airflow_provider_packly.retries import SINGLE_ATTEMPT_EXTENSION

KEY = "key"


def token(obtained_at: float = 0.0, lifetime: float = 100.0, margin: float = 10.0) -> AccessToken:
    return AccessToken("tok", lifetime, obtained_at, obtained_at + lifetime - margin, obtained_at + lifetime)


def test_the_first_caller_leads_and_the_next_waits_on_the_same_flight():
    slots = TokenSlots()
    first = slots._claim(KEY, now=0.0)
    second = slots._claim(KEY, now=0.0)
    assert first.lead and first.flight is not None and first.fallback is None
    assert not second.lead and second.flight is first.flight


def test_settling_with_a_token_caches_it_and_ends_the_flight():
    slots, fetched = TokenSlots(), token()
    claim = slots._claim(KEY, now=0.0)
    assert claim.flight is not None
    slots._settle(KEY, claim.flight, fetched)
    assert claim.flight.result(timeout=0) is fetched
    assert slots._claim(KEY, now=50.0).token is fetched
    assert slots._fresh(KEY, now=89.9) is fetched and slots._fresh(KEY, now=90.0) is None


def test_settling_with_a_failure_fails_the_waiters_and_caches_nothing():
    slots = TokenSlots()
    claim = slots._claim(KEY, now=0.0)
    assert claim.flight is not None
    slots._settle(KEY, claim.flight, RuntimeError("down"))
    with pytest.raises(RuntimeError):
        claim.flight.result(timeout=0)
    assert slots.peek(KEY) is None and slots._claim(KEY, now=0.0).lead


def test_inside_the_margin_one_caller_refreshes_and_the_others_keep_the_valid_token():
    slots, valid = TokenSlots(), token()
    first = slots._claim(KEY, now=0.0)
    assert first.flight is not None
    slots._settle(KEY, first.flight, valid)
    leader = slots._claim(KEY, now=95.0)  # due for refresh, still valid
    assert leader.lead and leader.fallback is valid
    assert slots._claim(KEY, now=95.0).token is valid  # a refresh in flight: use the valid one


def test_a_failed_refresh_falls_back_and_backs_off():
    slots, valid = TokenSlots(refresh_backoff_seconds=2.0), token()
    first = slots._claim(KEY, now=0.0)
    assert first.flight is not None
    slots._settle(KEY, first.flight, valid)
    leader = slots._claim(KEY, now=92.0)
    assert leader.flight is not None
    wait = slots._fall_back(KEY, leader.flight, valid, now=92.0)
    assert wait == refresh_backoff(1, 8.0, 2.0) == 2.0
    assert leader.flight.result(timeout=0) is valid
    assert slots._claim(KEY, now=93.9).token is valid  # backing off
    assert slots._claim(KEY, now=94.0).lead  # the next attempt


def test_no_fall_back_on_an_expired_token():
    slots, valid = TokenSlots(), token()
    first = slots._claim(KEY, now=0.0)
    assert first.flight is not None
    slots._settle(KEY, first.flight, valid)
    leader = slots._claim(KEY, now=95.0)
    assert leader.flight is not None
    assert slots._fall_back(KEY, leader.flight, valid, now=100.0) is None
    assert not leader.flight.done()  # the caller settles it with its failure


def test_a_single_attempt_token_request_is_marked_so(make_connection):
    connection = make_connection()
    assert SINGLE_ATTEMPT_EXTENSION not in build_token_request(connection).extensions
    assert build_token_request(connection, single_attempt=True).extensions[SINGLE_ATTEMPT_EXTENSION] is True


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        # The pure rules: no Airflow, and nothing that does I/O above them.
        ("airflow_provider_packly.core.tokens", ("airflow", "airflow_provider_packly._http")),
        # Calls flow one way: the token layer never reaches back into the hook.
        ("airflow_provider_packly.auth", ("airflow", "airflow_provider_packly.hooks.packly")),
        # The I/O shell imports no Airflow and nothing above it.
        ("airflow_provider_packly._http", ("airflow", "airflow_provider_packly.hooks.packly")),
    ],
)
def test_what_each_layer_does_not_import(module: str, absent: tuple[str, ...]):
    code = f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
