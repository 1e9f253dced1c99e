"""The scale-out DAG: 50 mapped Packly quotations and 20 mapped deferred order sensors.

Run by the cluster suite (``./dev cluster``) on the CeleryExecutor (two prefork workers) and on
the LocalExecutor, against the local sandbox. Every Packly task runs in the ``packly_api`` pool
(the suite creates it with a few slots), the way a deployment keeps a burst of mapped tasks
within a rate limit; deferred sensors give their slot back while the triggerer waits for them.

The 20 orders are the sandbox's seeded orders that end ``closed`` (every order 1-25 except the
deleted ORD-0002, the canceled ORD-0007/0014/0021 and ORD-0017, closed from the start), so each
sensor pokes once on a worker, defers, and is resumed by the triggerer.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_packly.operators.packly import PacklyQuotationOperator
from airflow_provider_packly.sensors.packly import PacklyOrderStatusSensor

DAG_ID = "packly_scale_out"
POOL = "packly_api"
QUOTATIONS = 50
NOT_CLOSING = {2, 7, 14, 17, 21}
ORDER_IDS = [f"ORD-{n:04d}" for n in range(1, 26) if n not in NOT_CLOSING]


def quotation_items(n: int) -> list[dict[str, Any]]:
    """One box per quotation, a different width each, so no two calls are the same."""
    return [
        {
            "article": "s020_v1",
            "material": "SBS300",
            "width": 100 + n,
            "depth": 80,
            "height": 40,
            "references": [{"quantity": 500}],
        }
    ]


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=64,
    tags=["packly", "cluster"],
    doc_md=__doc__,
)
def packly_scale_out() -> None:
    quotes = PacklyQuotationOperator.partial(task_id="quote", pool=POOL).expand(
        items=[quotation_items(n) for n in range(QUOTATIONS)]
    )
    orders = PacklyOrderStatusSensor.partial(
        task_id="wait_for_order",
        pool=POOL,
        target_statuses=["closed"],
        deferrable=True,
        poke_interval=2,
        timeout=900,
    ).expand(order_id=ORDER_IDS)

    @task
    def count(quoted: list[Any], waited: list[Any]) -> dict[str, int]:
        """How many quotations and closed orders came back (the run's own check)."""
        closed = [w for w in waited if isinstance(w, dict) and w.get("order_status") == "closed"]
        return {"quotations": len(list(quoted)), "closed_orders": len(closed)}

    count(quotes.output, orders.output)


packly_scale_out()
