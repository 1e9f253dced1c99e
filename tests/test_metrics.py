"""The provider's ``Stats`` metrics (``airflow_provider_packly.metrics``) on a fake Stats backend.

Every call runs sync and async (one rule for both); the hook talks to ``FakePackly`` through
``httpx.MockTransport``, and retries wait on the fake clock (``fake_time``).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_packly import metrics
from airflow_provider_packly.exceptions import PacklyAuthError, PacklyError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after

from .fakes import ORDERS_PATH, SECRET, FakePackly, envelope, fake_connection, order, page


class FakeStats:
    """Records each emit as ``(method, name, value, tags)``; ``value`` is ``None`` for counters."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any, dict[str, str]]] = []

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, str] | None = None) -> None:
        self.events.append(("incr", stat, None, dict(tags or {})))

    def gauge(self, stat: str, value: float, *, tags: dict[str, str] | None = None) -> None:
        self.events.append(("gauge", stat, value, dict(tags or {})))

    def timing(self, stat: str, dt: Any, *, tags: dict[str, str] | None = None) -> None:
        self.events.append(("timing", stat, dt, dict(tags or {})))

    def named(self, name: str) -> list[dict[str, str]]:
        """The tags of each emit of ``name``, in order."""
        return [tags for _, stat, _, tags in self.events if stat == name]


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> FakeStats:
    fake = FakeStats()
    monkeypatch.setattr(metrics, "stats", fake)
    return fake


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Callable[[PacklyHook, str], Any]:
    """``run(hook, what)``: ``what`` is ``"token"`` (``get_token``) or an endpoint to GET, sync or async."""

    def go(hook: PacklyHook, what: str) -> Any:
        if request.param == "sync":
            try:
                return hook.get_token() if what == "token" else hook.request("GET", what)
            finally:
                hook.close()

        async def main() -> Any:
            try:
                return await (hook.aget_token() if what == "token" else hook.arequest("GET", what))
            finally:
                await hook.aclose()

        return asyncio.run(main())

    return go


def test_one_call_times_each_endpoint_and_counts_no_retry(stats, run):
    response = run(FakePackly().hook(), ORDERS_PATH)
    assert response.status_code == 200
    assert stats.named(metrics.TOKEN_FETCHES) == [{"outcome": "ok"}]
    assert stats.named(metrics.TOKEN_FAILURES) == []
    assert stats.named(metrics.REQUEST_DURATION) == [
        {"endpoint": "v1_oauth2_token", "outcome": "ok"},
        {"endpoint": "v1_reseller_orders", "outcome": "ok"},
    ]
    assert all(isinstance(dt, datetime.timedelta) for _, _, dt, _ in stats.events if _ == "timing")
    assert stats.named(metrics.RETRIES) == []


def test_a_retried_503_is_counted_with_its_reason(stats, run, fake_time):
    packly = FakePackly(httpx.Response(503), httpx.Response(200, json={"response": []}))
    response = run(packly.hook(retry_max_attempts=3), ORDERS_PATH)
    assert response.status_code == 200 and len(fake_time.waits) == 1
    assert stats.named(metrics.RETRIES) == [{"endpoint": "v1_reseller_orders", "reason": "http_503"}]
    # One call, one latency sample: the retry is inside it.
    assert stats.named(metrics.REQUEST_DURATION)[-1] == {"endpoint": "v1_reseller_orders", "outcome": "ok"}
    assert len(stats.named(metrics.REQUEST_DURATION)) == 2


def test_a_retried_429_is_counted_with_its_reason(stats, run, fake_time):
    packly = FakePackly(httpx.Response(429), httpx.Response(200, json={"response": []}))
    assert run(packly.hook(retry_max_attempts=3), ORDERS_PATH).status_code == 200
    assert stats.named(metrics.RETRIES) == [{"endpoint": "v1_reseller_orders", "reason": "http_429"}]


def test_a_token_fetch_that_cannot_reach_packly_is_counted_with_the_error_class(stats, run):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    with pytest.raises(PacklyTransportError):
        run(PacklyHook(connection=fake_connection(), transport=transport, async_transport=transport), "token")
    assert stats.named(metrics.TOKEN_FETCHES) == [{"outcome": "error"}]
    assert stats.named(metrics.TOKEN_FAILURES) == [{"reason": "PacklyTransportError"}]


@pytest.mark.parametrize(
    ("path", "tag"),
    [
        ("/v1/reseller/orders", "v1_reseller_orders"),
        ("/v1/reseller/dieline", "v1_reseller_dieline"),
        ("/v1/oauth2/token", "v1_oauth2_token"),
        ("/v1/reseller/orders/ord-12345", "v1_reseller_orders_id"),
    ],
)
def test_the_endpoint_tags_docs_metrics_md_names(path, tag):
    assert metrics.endpoint_tag(httpx.Request("GET", f"https://api.packly.io{path}?page=2")) == tag


def test_a_retried_transport_failure_is_counted_with_its_class_name(stats, run, fake_time):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    packly = FakePackly(refuse, httpx.Response(200, json={"response": []}))
    assert run(packly.hook(retry_max_attempts=3), ORDERS_PATH).status_code == 200
    assert stats.named(metrics.RETRIES) == [{"endpoint": "v1_reseller_orders", "reason": "ConnectError"}]


def test_a_token_fetch_is_counted(stats, run):
    assert run(FakePackly().hook(), "token") == "tok-1"
    assert stats.named(metrics.TOKEN_FETCHES) == [{"outcome": "ok"}]
    assert stats.named(metrics.TOKEN_FAILURES) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_cached_token_is_no_fetch(stats, mode):
    packly = FakePackly()
    hook = packly.hook()
    if mode == "sync":
        with hook:
            hook.request("GET", ORDERS_PATH)
            hook.request("GET", ORDERS_PATH)
    else:

        async def main() -> None:
            async with hook:
                await hook.arequest("GET", ORDERS_PATH)
                await hook.arequest("GET", ORDERS_PATH)

        asyncio.run(main())
    assert packly.token_requests == 1 and len(packly.calls) == 2
    assert stats.named(metrics.TOKEN_FETCHES) == [{"outcome": "ok"}]


def test_a_refused_token_fetch_is_counted_as_a_failure_with_its_status(stats, run):
    with pytest.raises(PacklyAuthError):
        run(FakePackly(token_status=401).hook(), "token")
    assert stats.named(metrics.TOKEN_FETCHES) == [{"outcome": "error"}]
    assert stats.named(metrics.TOKEN_FAILURES) == [{"reason": "http_401"}]
    assert stats.named(metrics.REQUEST_DURATION) == [{"endpoint": "v1_oauth2_token", "outcome": "ok"}]


def test_a_failed_call_is_timed_as_an_error(stats, run):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PacklyError):
        run(FakePackly(refuse).hook(), ORDERS_PATH)
    assert stats.named(metrics.REQUEST_DURATION)[-1] == {"endpoint": "v1_reseller_orders", "outcome": "error"}


class BrokenStats:
    """A metrics backend that fails on every emit (a dead StatsD socket, a buggy custom logger)."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise OSError("metrics backend down")

        return fail


def test_a_broken_metrics_backend_never_fails_a_call(monkeypatch, run, fake_time):
    monkeypatch.setattr(metrics, "stats", BrokenStats())
    packly = FakePackly(httpx.Response(503), httpx.Response(200, json={"response": []}))
    assert run(packly.hook(retry_max_attempts=3), ORDERS_PATH).status_code == 200
    with pytest.raises(PacklyAuthError):  # the failure raised is Packly's, not the backend's
        run(FakePackly(token_status=401).hook(client_id="another-client"), "token")


def test_a_backend_without_tags_gets_the_values_in_the_name(monkeypatch, run, fake_time):
    names: list[str] = []

    class UntaggedStats:
        def incr(self, stat: str, count: int = 1, rate: float = 1) -> None:
            names.append(stat)

        def timing(self, stat: str, dt: Any) -> None:
            names.append(stat)

    monkeypatch.setattr(metrics, "stats", UntaggedStats())
    packly = FakePackly(httpx.Response(503), httpx.Response(200, json={"response": []}))
    run(packly.hook(retry_max_attempts=3), ORDERS_PATH)
    assert names == [
        "packly.request.duration.v1_oauth2_token.ok",
        "packly.token.fetches.ok",
        "packly.retries.v1_reseller_orders.http_503",
        "packly.request.duration.v1_reseller_orders.ok",
    ]


def test_no_metric_carries_a_secret_an_identifier_or_a_query(stats, run):
    run(FakePackly().hook(), "/v1/reseller/orders/ord-12345/eyJhbGciOiJIUzI1NiJ9?access_token=tok-1")
    recorded = json.dumps([(name, tags) for _, name, _, tags in stats.events])
    for secret in (SECRET, "tok-1", "12345", "eyJhbGci", "fake-client-id"):
        assert secret not in recorded
    assert stats.named(metrics.REQUEST_DURATION)[-1]["endpoint"] == "v1_reseller_orders_id_id"


def test_the_scan_hook_counts_scans_and_waiters(stats):
    metrics.record_scan(40)
    assert [(method, name, value) for method, name, value, _ in stats.events] == [
        ("incr", metrics.SCANS, None),
        ("gauge", metrics.SCAN_WAITERS, 40),
    ]


# -- the shared order scan (triggers.order_scan) ----------------------------------------------------


def _order_book(count: int, status: str) -> FakePackly:
    """A Packly with ``count`` orders of ``status``, served in pages (the empty page ends the list)."""
    orders = [order(f"ORD-{n:04d}", status) for n in range(1, count + 1)]

    def list_page(request: httpx.Request) -> httpx.Response:
        number, limit = int(request.url.params["page"]), int(request.url.params["limit"])
        return page(*orders[number * limit : (number + 1) * limit])

    return FakePackly(list_page)


def _waiting_trigger(order_id: str) -> PacklyOrderStatusTrigger:
    return PacklyOrderStatusTrigger(
        order_id=order_id,
        condition=OrderCondition("order_status", ("closed",)).to_dict(),
        deadline=deadline_after(120),
        poll_interval=60,
        page_size=50,
    )


async def _first_event(trigger: PacklyOrderStatusTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


@pytest.mark.anyio
@pytest.mark.parametrize("waiting", [1, 40])
async def test_one_shared_scan_is_counted_once_with_every_trigger_it_serves(stats, monkeypatch, waiting):
    packly = _order_book(120, status="closed")  # 3 pages of 50
    monkeypatch.setattr(PacklyOrderStatusTrigger, "_make_hook", lambda trigger: packly.hook())
    ids = [f"ORD-{(i * 37) % 120 + 1:04d}" for i in range(waiting)]  # spread over every page
    events = await asyncio.gather(*(_first_event(_waiting_trigger(order_id)) for order_id in ids))
    assert [event["status"] for event in events] == ["success"] * waiting
    assert [(method, name, value) for method, name, value, _ in stats.events if name.startswith("packly.scan")] == [
        ("incr", metrics.SCANS, None),
        ("gauge", metrics.SCAN_WAITERS, waiting),
    ]


@pytest.mark.anyio
async def test_a_failed_scan_is_counted_with_the_triggers_it_failed(stats, monkeypatch):
    refusing = FakePackly(envelope(400, "BAD_REQUEST", "no"))
    monkeypatch.setattr(PacklyOrderStatusTrigger, "_make_hook", lambda trigger: refusing.hook())
    events = await asyncio.gather(*(_first_event(_waiting_trigger(f"ORD-000{n}")) for n in (1, 2, 3)))
    assert [event["status"] for event in events] == ["error"] * 3
    assert len(refusing.calls) == 1  # one pass, failed on its first page
    assert [(name, value) for _, name, value, _ in stats.events if name.startswith("packly.scan")] == [
        (metrics.SCANS, None),
        (metrics.SCAN_WAITERS, 3),
    ]


def test_airflow_stats_is_the_default_backend(monkeypatch):
    """The looked-up backend is the Stats both Airflow 3.2 and 3.3 offer, and emitting through it works
    (Airflow's ``NoStatsLogger`` when no metrics backend is configured)."""
    from airflow.sdk.observability.stats import Stats

    monkeypatch.setattr(metrics, "stats", None)
    metrics.record_scan(1)
    assert metrics.stats is Stats


def test_the_stats_lookup_warns_of_no_deprecation_on_this_airflow():
    """docs/metrics.md: the provider's way to Airflow's Stats is not deprecated (3.3 and the 3.2 floor)."""
    code = (
        "from airflow.sdk.observability.stats import Stats\n"
        "from airflow_provider_packly import metrics\n"
        "metrics.record_scan(1)\n"
        "assert metrics.stats is Stats\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_metric_is_named_packly_and_documented():
    """docs/metrics.md's table lists exactly the module's metric names, each starting ``packly.``."""
    names = {value for name, value in vars(metrics).items() if name.isupper() and isinstance(value, str)}
    assert len(names) == 6
    assert all(name.startswith("packly.") for name in names)
    page = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    assert set(re.findall(r"^\| `(packly\.[a-z_.]+)` \|", page, re.MULTILINE)) == names
