"""A trigger torn down mid-wait (a triggerer restart) and re-created from its serialize() output
keeps its absolute deadline and sends nothing that changes state: against the sandbox on loopback."""

from __future__ import annotations

import asyncio
import json

import anyio
import pytest

from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
from airflow_provider_packly.triggers.rules import deadline_after

pytestmark = pytest.mark.integration


def recreate(trigger: PacklyOrderStatusTrigger) -> PacklyOrderStatusTrigger:
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_packly.triggers.packly.PacklyOrderStatusTrigger"
    return PacklyOrderStatusTrigger(**json.loads(json.dumps(kwargs)))  # as stored in the database


@pytest.mark.anyio
async def test_restart_keeps_the_deadline_and_sends_only_reads(monkeypatch):
    # Orders never advance: ORD-0001 stays open, so only the deadline can end the wait.
    with run_sandbox(SandboxConfig(order_step_seconds=10_000)) as sandbox:
        monkeypatch.setenv(
            "AIRFLOW_CONN_PACKLY_RESTART",
            json.dumps(
                {
                    "conn_type": "packly",
                    "login": "sandbox-client-id",
                    "password": "sandbox-client-secret",
                    "host": sandbox.base_url,
                    "extra": {"environment": "sandbox"},
                }
            ),
        )
        deadline = deadline_after(4)
        first = PacklyOrderStatusTrigger(
            order_id="ORD-0001",
            condition={"kind": "order_status", "target_statuses": ["closed"], "failure_statuses": ["canceled"]},
            deadline=deadline,
            packly_conn_id="packly_restart",
            poll_interval=0.2,
        )
        running = asyncio.ensure_future(first.run().__anext__())
        with anyio.fail_after(3):  # a few polls, then the triggerer goes away
            while sandbox.state.api_requests.get("/v1/reseller/orders", 0) < 2:
                await asyncio.sleep(0.02)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        polls_before_restart = sandbox.state.api_requests["/v1/reseller/orders"]

        again = recreate(first)
        assert again.deadline == deadline
        event = await again.run().__anext__()
        await PacklyHook.aclose_shared_clients()

        assert event.payload["status"] == "timeout"
        assert deadline in event.payload["message"]  # the original deadline, not a reset one
        assert polls_before_restart >= 2
        assert sandbox.state.api_requests["/v1/reseller/orders"] > polls_before_restart
        assert set(sandbox.state.api_requests) == {"/v1/reseller/orders"}  # reads only
        assert sum(sandbox.state.write_attempts.values()) == 0
        assert sandbox.state.token_requests == 1  # the restarted trigger reused the process's token
