"""Start a DAG run each time a Packly order is closed: event-driven scheduling with ``AssetWatcher``.

The asset ``packly_closed_orders`` is watched by ``PacklyOrderEventTrigger`` on the triggerer:
it looks at the order list every 60 s (one scan shared with every other Packly trigger on the
connection) and fires one event per order that reaches ``closed``; each event starts one run of
this DAG, and the task reads the order from ``triggering_asset_events``. Orders already closed
when the watcher first looks are the baseline, not events; Airflow 3.3 keeps what was reported in
the asset state store, so a triggerer restart sends no event twice.

The watcher uses the connection ``packly_events`` (it may hold the same credentials as
``packly_default``): until it exists the watcher only logs that it is missing, so this file can
sit in a DAG folder without polling anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_provider_packly.triggers.order_events import PacklyOrderEventTrigger

log = logging.getLogger(__name__)

CLOSED_ORDERS = Asset(
    "packly_closed_orders",
    watchers=[
        AssetWatcher(
            name="packly_closed_orders_watcher",
            trigger=PacklyOrderEventTrigger(
                mode="status", statuses=["closed"], packly_conn_id="packly_events", poll_interval=60
            ),
        )
    ],
)


def closed_orders(events: Mapping[Any, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """The orders carried by the asset events that started this run (none for a manual run)."""
    orders = []
    for event in (events or {}).get(CLOSED_ORDERS, []):
        payload = (event.extra or {}).get("payload") or {}
        if isinstance(payload.get("order"), dict):
            orders.append(payload["order"])
    return orders


@dag(
    dag_id="packly_on_order_closed",
    schedule=[CLOSED_ORDERS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["packly", "example"],
    doc_md=__doc__,
)
def packly_on_order_closed() -> None:
    @task
    def handle_closed_orders(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        orders = closed_orders(triggering_asset_events)
        summary = [{"id": order.get("id"), "status": order.get("status")} for order in orders]
        log.info("Packly result: %s", json.dumps(summary))
        return summary

    handle_closed_orders()


packly_on_order_closed()
