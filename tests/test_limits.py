"""The deadline and body-limit rules without a network (limits.py, the setting, the token cache)."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from airflow_provider_packly.auth import TokenCache
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyConnectionConfigError, PacklyTransportError
from airflow_provider_packly.limits import TRUNCATED_EXTENSION, Deadline, read_limited


def test_the_deadline_setting_is_read_from_the_extra_and_checked():
    fields = {"login": "id", "password": "pw", "host": "https://api.packly.io", "conn_id": "c"}
    assert PacklyConnection.from_fields(**fields, extra={"request_deadline_seconds": "12.5"}).request_deadline() == 12.5
    default = PacklyConnection.from_fields(**fields, extra={})
    assert default.request_deadline_seconds is None
    assert default.request_deadline() == 60 + 4 * 30  # retry budget + pool, connect, write, read
    with pytest.raises(
        PacklyConnectionConfigError, match="request_deadline_seconds = 0.0; give a number of seconds above 0"
    ):
        PacklyConnection.from_fields(**fields, extra={"request_deadline_seconds": 0})


def test_each_attempt_gets_phase_timeouts_no_longer_than_the_time_left():
    request = httpx.Request("GET", "https://api.packly.io/v1/reseller/orders")
    Deadline.start(2.0).apply(request, httpx.Timeout(30, connect=1))
    timeouts = request.extensions["timeout"]
    assert timeouts["connect"] == 1
    assert 1.5 < timeouts["read"] <= 2.0 and timeouts["pool"] <= 2.0


def test_a_call_made_inside_another_gets_the_earlier_deadline():
    outer = Deadline.start(1.0)
    with outer.active():
        assert Deadline.start(100.0) is outer
        assert Deadline.start(0.5).at < outer.at


def test_no_attempt_starts_after_the_deadline():
    request = httpx.Request("GET", "https://api.packly.io/v1/reseller/orders")
    with pytest.raises(PacklyTransportError, match="overall deadline of 0.001 s.*request_deadline_seconds"):
        Deadline(time.monotonic() - 1, 0.001).apply(request, httpx.Timeout(30))


def test_read_limited_stops_just_past_the_limit_and_says_so():
    request = httpx.Request("GET", "https://api.packly.io/v1/reseller/orders")
    cut = read_limited(httpx.Response(200, content=b"x" * 10_000, request=request), 100)
    assert cut.content == b"x" * 101 and cut.extensions[TRUNCATED_EXTENSION]
    whole = read_limited(httpx.Response(200, content=b"short", request=request), 100)
    assert whole.content == b"short" and TRUNCATED_EXTENSION not in whole.extensions


def test_a_waiter_never_waits_for_another_callers_fetch_without_a_bound():
    cache = TokenCache()
    stuck: concurrent.futures.Future = concurrent.futures.Future()  # a fetch whose thread is gone
    from airflow_provider_packly.auth import _Slot

    cache._slots["key"] = _Slot(flight=stuck)
    started = time.monotonic()
    with pytest.raises(PacklyTransportError, match="Waited 0.2 s for the token request another caller had in flight"):
        cache.get("key", lambda: pytest.fail("must not lead"), wait_seconds=0.2)
    assert time.monotonic() - started < 5


@pytest.mark.anyio
async def test_an_async_waiter_never_waits_without_a_bound_either():
    from airflow_provider_packly.auth import _Slot

    cache = TokenCache()
    cache._slots["key"] = _Slot(flight=concurrent.futures.Future())

    async def must_not_lead():
        pytest.fail("must not lead")

    with pytest.raises(PacklyTransportError, match="Waited 0.2 s"):
        await cache.aget("key", must_not_lead, wait_seconds=0.2)
