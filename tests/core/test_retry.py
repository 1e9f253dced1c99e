"""``core.retry``: the pure retry decision, apart from the loop that drives it (``retries``)."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from airflow_provider_packly import retries
from airflow_provider_packly.core import retry
from airflow_provider_packly.core.retry import (
    IDEMPOTENT_EXTENSION,
    SINGLE_ATTEMPT_EXTENSION,
    RetryRules,
    attempts_made,
    may_have_been_applied,
)

from .purity import modules_loaded_by, provider_modules_loaded_by


def _request(method: str = "GET", **extensions: object) -> httpx.Request:
    return httpx.Request(method, "https://api.packly.io/v1/reseller/orders", extensions=extensions)


def test_the_decision_loads_no_loop_no_airflow_and_no_settings_form():
    assert "airflow" not in modules_loaded_by("airflow_provider_packly.core.retry")
    loaded = provider_modules_loaded_by("airflow_provider_packly.core.retry")
    assert loaded <= {
        "airflow_provider_packly",
        "airflow_provider_packly.core",
        "airflow_provider_packly.core.errors",
        "airflow_provider_packly.core.retry",
        "airflow_provider_packly.core.settings",
    }


def test_the_rules_hold_the_settings_and_decide_but_never_wait():
    names = {f.name for f in dataclasses.fields(RetryRules)}
    assert names == {"max_attempts", "max_seconds", "backoff", "backoff_max", "retry_after_max"}
    assert not any(hasattr(RetryRules, name) for name in ("call", "acall", "sleep", "asleep", "clock"))
    assert issubclass(retries.RetryPolicy, RetryRules)


def test_retries_re_exports_the_decision():
    for name in retry.__all__:
        if name in retries.__all__:
            assert getattr(retries, name) is getattr(retry, name), name
    assert retries._jitter is retry._jitter  # the fork test reseeds it through ``retries``


@pytest.mark.parametrize(
    ("method", "extensions", "outcome", "retried"),
    [
        ("GET", {}, httpx.Response(502), True),
        ("POST", {}, httpx.Response(502), False),
        ("POST", {}, httpx.Response(503, headers={"retry-after": "1"}), True),
        ("POST", {IDEMPOTENT_EXTENSION: True}, httpx.Response(502), True),
        ("POST", {}, httpx.Response(429), True),
        ("GET", {SINGLE_ATTEMPT_EXTENSION: True}, httpx.Response(429), False),
        ("POST", {}, httpx.ConnectError("refused"), True),
        ("POST", {}, httpx.ReadError("dropped"), False),
        ("GET", {}, httpx.ReadError("dropped"), True),
        ("GET", {}, httpx.LocalProtocolError("bad header"), False),
        ("GET", {}, httpx.Response(404), False),
    ],
)
def test_reason(method, extensions, outcome, retried):
    assert (RetryRules().reason(_request(method, **extensions), outcome) is not None) is retried


def test_retry_after_is_honoured_up_to_its_ceiling():
    rules = RetryRules(retry_after_max=10)
    assert rules.wait_seconds(1, httpx.Response(429, headers={"retry-after": "3"})) == 3
    assert rules.wait_seconds(1, httpx.Response(429, headers={"retry-after": "3600"})) == 10


def test_a_write_that_may_have_arrived_is_not_resent():
    assert may_have_been_applied(_request("POST"), httpx.ReadError("dropped"))
    assert not may_have_been_applied(_request("POST"), httpx.ConnectError("refused"))
    assert not may_have_been_applied(_request("GET"), httpx.ReadError("dropped"))


def test_attempts_made_reads_what_the_loop_records():
    request = _request()
    assert attempts_made(request) == 1
    request.extensions[retry.ATTEMPTS_EXTENSION] = 3
    assert attempts_made(httpx.Response(200, request=request)) == 3
