"""Get a quotation, then wait (deferred, on the triggerer) until an order is closed.

The order id is a DAG param (default ``ORD-0001``: in the local sandbox it starts at
``waiting_execute_payment`` and is ``closed`` four steps, 8 s by default, after a listing first
served it, however long the sandbox has been up). ``PacklyOrderStatusSensor`` pokes once, then
defers to ``PacklyOrderStatusTrigger`` which polls every 2 s for up to 120 s; a canceled or
deleted order fails the sensor at once.

Run against the local sandbox with ``airflow dags test packly_quote_then_wait_for_order``; the
last task reads the order again and logs ``Packly result:`` followed by JSON.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_packly.operators.packly import PacklyQuotationOperator
from airflow_provider_packly.sensors.packly import PacklyOrderStatusSensor

log = logging.getLogger(__name__)


@dag(
    dag_id="packly_quote_then_wait_for_order",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["packly", "example"],
    params={"order_id": Param("ORD-0001", type="string", description="The Packly order to wait for.")},
    doc_md=__doc__,
)
def packly_quote_then_wait_for_order() -> None:
    quotation = PacklyQuotationOperator(
        task_id="get_quotation",
        items=[
            {
                "article": "s020_v1",
                "material": "SBS300",
                "width": 120,
                "depth": 80,
                "height": 40,
                "references": [{"quantity": 1000}],
            }
        ],
    )

    wait_for_order = PacklyOrderStatusSensor(
        task_id="wait_for_order_closed",
        order_id="{{ params.order_id }}",
        target_statuses=["closed"],
        deferrable=True,
        poke_interval=2,
        timeout=120,
    )

    @task
    def summarize(quotation: Any, waited: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow_provider_packly.hooks.packly import PacklyHook

        order_id = (params or {})["order_id"]
        with PacklyHook("packly_default") as hook:
            order = hook.get_order(order_id)
        body = quotation.get("response") if isinstance(quotation, dict) else None
        summary = {
            "order_id": order_id,
            "final_status": order.get("status"),
            "sensor_status": waited.get("order_status"),
            "quotation_total": (body or {}).get("total_amount_tax_included"),
        }
        log.info("Packly result: %s", json.dumps(summary, sort_keys=True))
        return summary

    quotation >> wait_for_order
    summarize(quotation.output, wait_for_order.output)


packly_quote_then_wait_for_order()
