"""TaskFlow: one task's output is the next task's argument, and one operator maps over a list.

1. ``PacklyOrdersOperator`` lists the open orders (oldest first);
2. a ``@task`` picks the oldest one and returns its id;
3. ``PacklyOrderStatusSensor`` waits, deferred on the triggerer, until that order is closed:
   its ``order_id`` is the ``@task``'s return value (an ``XComArg``), resolved when it runs;
4. meanwhile ``PacklyQuotationOperator`` prices three box sizes, one mapped task instance per
   box (``.partial().expand(items=...)``), the list coming from another ``@task``;
5. the last task logs ``Packly result:`` followed by JSON: the order and the three prices.

Arguments that come from upstream are checked when the task runs, with the same messages as
literal ones get when the DAG file is parsed. Run against the local sandbox with
``airflow dags test packly_taskflow_chain``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_packly.operators.packly import PacklyOrdersOperator, PacklyQuotationOperator
from airflow_provider_packly.sensors.packly import PacklyOrderStatusSensor

log = logging.getLogger(__name__)

OPEN_STATUSES = ["waiting_execute_payment", "pending_payment", "paid", "in_processing"]
BOX = {"article": "s020_v1", "material": "SBS300", "depth": 80, "height": 40}


@dag(
    dag_id="packly_taskflow_chain",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["packly", "example"],
    doc_md=__doc__,
)
def packly_taskflow_chain() -> None:
    open_orders = PacklyOrdersOperator(task_id="list_open_orders", statuses=OPEN_STATUSES, sort="asc")

    @task
    def pick_order(orders: list[dict[str, Any]]) -> str:
        """The oldest open order's id."""
        if not orders:
            raise ValueError("Packly lists no open order to wait for.")
        return str(min(orders, key=lambda order: str(order["id"]))["id"])

    wait_for_order = PacklyOrderStatusSensor(
        task_id="wait_for_order",
        order_id=pick_order(open_orders.output),
        target_statuses=["closed"],
        deferrable=True,
        poke_interval=2,
        timeout=120,
    )

    @task
    def box_sizes() -> list[list[dict[str, Any]]]:
        """One quotation (a list of items) per box width."""
        return [[{**BOX, "width": width, "references": [{"quantity": 500}]}] for width in (100, 120, 140)]

    quotations = PacklyQuotationOperator.partial(task_id="quote_box", shipping="IT").expand(items=box_sizes())

    @task
    def summarize(waited: dict[str, Any], quotations: Any) -> dict[str, Any]:
        totals = []
        for index in range(len(quotations)):  # one per mapped task instance, in map index order
            quotation = quotations[index]
            body = quotation.get("response") if isinstance(quotation, dict) else None
            totals.append((body or {}).get("total_amount_tax_included"))
        summary = {
            "order_id": waited["order_id"],
            "order_status": waited["order_status"],
            "quotation_totals": totals,
        }
        log.info("Packly result: %s", json.dumps(summary, sort_keys=True))
        return summary

    summarize(wait_for_order.output, quotations.output)


packly_taskflow_chain()
