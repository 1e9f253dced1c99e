"""The example DAG ``packly_on_order_closed``: its watcher's trigger driven against the sandbox."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from airflow_provider_packly.triggers.order_events import PacklyOrderEventTrigger

from .fakes import sandbox_connection_json

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_packly_order_events.py"


@pytest.mark.integration
@pytest.mark.anyio
async def test_the_example_dags_watcher_reports_closed_orders_to_its_task(monkeypatch):
    example = runpy.run_path(str(EXAMPLE))
    asset = example["CLOSED_ORDERS"]
    trigger = asset.watchers[0].trigger
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("order_events.PacklyOrderEventTrigger")
    assert kwargs["statuses"] == ["closed"] and kwargs["packly_conn_id"] == "packly_events"

    with run_sandbox(SandboxConfig(order_step_seconds=0.1)) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_PACKLY_EVENTS", sandbox_connection_json(sandbox.base_url))
        fast = PacklyOrderEventTrigger(**{**kwargs, "poll_interval": 0.05})  # the example polls every 60 s
        events = []
        with anyio.fail_after(60):
            async for event in fast.run():
                events.append(event.payload)
                if any(e["order_id"] == "ORD-0001" for e in events):
                    break
    assert all(e["status"] == "closed" and e["previous_status"] != "closed" for e in events)
    assert "ORD-0017" not in {e["order_id"] for e in events}  # closed before the first look: baseline
    assert len({e["order_id"] for e in events}) == len(events)  # once per transition
    json.dumps(events)

    # What the DAG's task gets: the payloads in the asset events that started the run.
    asset_events = {asset: [SimpleNamespace(extra={"from_trigger": True, "payload": e}) for e in events]}
    orders = example["closed_orders"](asset_events)
    assert [order["id"] for order in orders] == [e["order_id"] for e in events]
    assert example["closed_orders"]({}) == []  # a manual run: no events
