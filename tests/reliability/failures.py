"""One hook call, sync or async, that a reliability test expects to fail with a PacklyError."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyError
from airflow_provider_packly.hooks.packly import PacklyHook


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
