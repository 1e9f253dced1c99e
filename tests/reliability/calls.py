"""Hook and trigger calls the reliability tests make against a (hostile) loopback Packly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after


def failed_get(connection: PacklyConnection, mode: str, path: str) -> PacklyError:
    """``GET path`` through ``hook.request`` (``mode="sync"``) or ``hook.arequest`` (``"async"``);
    the PacklyError it raised (the test fails if it raised none)."""
    if mode == "sync":
        with PacklyHook(connection=connection) as hook, pytest.raises(PacklyError) as raised:
            hook.request("GET", path)
        return raised.value

    async def run() -> PacklyError:
        async with PacklyHook(connection=connection) as hook:
            with pytest.raises(PacklyError) as raised:
                await hook.arequest("GET", path)
            return raised.value

    return asyncio.run(run())


async def order_closed_events(mocker: Any, connection: PacklyConnection) -> list[dict[str, Any]]:
    """Run an order-status trigger waiting for ORD-1 to close (30 s deadline, polling every
    0.01 s) with hooks on ``connection``; the payloads of the events it yields."""
    mocker.patch.object(PacklyOrderStatusTrigger, "_make_hook", lambda self: PacklyHook(connection=connection))
    trigger = PacklyOrderStatusTrigger(
        order_id="ORD-1",
        condition=OrderCondition("order_status", ("closed",), ()).to_dict(),
        deadline=deadline_after(30),
        poll_interval=0.01,
    )
    return [event.payload async for event in trigger.run()]
