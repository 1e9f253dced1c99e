"""The trigger's deadline bounds a poll still in flight (over real loopback HTTP)."""

from __future__ import annotations

import time

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after

from ..loopback import endless, loopback_server, token_then

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_stuck_poll_ends_at_the_trigger_deadline_with_a_timeout_event(mocker):
    """Orders that never finish arriving, a 60 s call deadline, a trigger deadline 3 s away:
    the event comes at the trigger's deadline, not the call's."""
    with loopback_server(token_then(endless())) as server:
        settings = PacklyConnection(
            client_id="trigger-client",
            client_secret="trigger-secret-Q1",
            base_url=server.base_url,
            timeout=30,
            request_deadline_seconds=60,
        )
        mocker.patch.object(PacklyOrderStatusTrigger, "_make_hook", lambda self: PacklyHook(connection=settings))
        trigger = PacklyOrderStatusTrigger(
            order_id="ORD-0001",
            condition=OrderCondition("order_status", ("closed",), ("canceled",)).to_dict(),
            deadline=deadline_after(3),  # time for the token and the GET to start on a loaded machine
            poll_interval=0.05,
        )
        started = time.monotonic()
        events = [event.payload async for event in trigger.run()]
        seconds = time.monotonic() - started
    assert [event["status"] for event in events] == ["timeout"]
    assert seconds < 15  # 3 s deadline, generous margin: not 60 s
    assert ("GET", "/v1/reseller/orders") in server.calls
