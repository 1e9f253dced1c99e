"""Paging through orders ends on an empty (or repeated) page, never on a short one (issue 9, item 10).

Packly documents no maximum for ``limit``. A server that caps it answers 20 orders when 50
were asked for; taking that short page for the last one reported later orders "not found",
and a sensor waiting on one of them failed for good.
"""

from __future__ import annotations

import json

import httpx
import pytest

from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.resources import OrderPager, PacklyOrderNotFound
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
from airflow_provider_packly.triggers.rules import deadline_after

from ..fakes import order, sandbox_connection_json


def capped(orders: list[dict], cap: int):
    """A Packly that answers at most ``cap`` orders per page, whatever ``limit`` says."""
    requested: list[tuple[int, int]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return httpx.Response(200, json={"token_type": "bearer", "access_token": "t%2F", "expires_in": 3600})
        page, limit = int(request.url.params["page"]), int(request.url.params["limit"])
        requested.append((page, limit))
        size = min(limit, cap)
        return httpx.Response(200, json={"request": {}, "response": orders[page * size : (page + 1) * size]})

    return answer, requested


ORDERS = [order(f"ORD-{n:04d}", "paid") for n in range(100, 0, -1)]  # newest first


def test_a_capped_limit_pages_on_to_the_end(make_connection):
    answer, requested = capped(ORDERS, cap=20)
    with PacklyHook(connection=make_connection(), transport=httpx.MockTransport(answer)) as hook:
        assert hook.get_order("ORD-0001", limit=50)["id"] == "ORD-0001"
        assert [o["id"] for o in hook.iter_orders(limit=50)] == [o["id"] for o in ORDERS]
    # the second listing: five pages of 20, then the empty page that ends it
    assert requested[-6:] == [(page, 50) for page in range(6)]


@pytest.mark.anyio
async def test_a_capped_limit_pages_on_to_the_end_async(make_connection):
    answer, _ = capped(ORDERS, cap=20)
    transport = httpx.MockTransport(answer)
    async with PacklyHook(connection=make_connection(), async_transport=transport) as hook:
        assert (await hook.aget_order("ORD-0001", limit=50))["id"] == "ORD-0001"
        with pytest.raises(PacklyOrderNotFound):
            await hook.aget_order("ORD-9999", limit=50)


def test_paging_ends_on_a_repeated_page_without_repeating_orders():
    """A server that ignores ``page`` answers page 0 again: the listing ends, nothing is yielded twice."""
    pager = OrderPager(limit=50)
    first = pager.accept({"response": [order("A", "paid"), order("B", "paid")]})
    assert [o["id"] for o in first] == ["A", "B"] and not pager.done
    assert pager.accept({"response": [order("A", "paid"), order("B", "paid")]}) == []
    assert pager.done


def test_paging_ends_on_an_empty_page():
    pager = OrderPager(limit=2)
    pager.accept({"response": [order("A", "paid")]})
    assert not pager.done  # short, but not the end: Packly may cap limit
    assert pager.accept({"response": []}) == [] and pager.done


# -- against the sandbox, with its page cap (a test knob) ------------------------------------------


def test_the_sandbox_cap_and_the_hook_find_the_oldest_order(make_connection):
    with run_sandbox(SandboxConfig(order_count=25, orders_limit_cap=10)) as sandbox:
        connection = make_connection(
            base_url=sandbox.base_url, client_id="sandbox-client-id", client_secret="sandbox-client-secret"
        )
        with PacklyHook(connection=connection) as hook:
            first_page = hook.request("GET", "/v1/reseller/orders", params={"limit": 50}).json()["response"]
            assert len(first_page) == 10  # capped silently, as a server may
            assert hook.get_order("ORD-0001", limit=50)["id"] == "ORD-0001"  # on page 2
            assert len(list(hook.iter_orders(limit=50))) == 25


@pytest.mark.anyio
async def test_a_trigger_waiting_on_an_order_past_a_capped_page_succeeds(monkeypatch):
    with run_sandbox(SandboxConfig(order_count=40, orders_limit_cap=10)) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_PACKLY_CAPPED", sandbox_connection_json(sandbox.base_url))
        trigger = PacklyOrderStatusTrigger(
            order_id="ORD-0017",  # closed from the start, on the third page (40..31, 30..21, 20..11)
            condition={"kind": "order_status", "target_statuses": ["closed"], "failure_statuses": ["canceled"]},
            deadline=deadline_after(30),
            packly_conn_id="packly_capped",
            poll_interval=0.1,
            page_size=50,
        )
        event = await trigger.run().__anext__()
        await PacklyHook.aclose_shared_clients()
    assert event.payload["status"] == "success", json.dumps(event.payload)
    assert event.payload["order_status"] == "closed"


def test_the_sandbox_cap_is_checked():
    with pytest.raises(ValueError, match="orders_limit_cap"):
        SandboxConfig(orders_limit_cap=0)
