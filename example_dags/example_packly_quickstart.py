"""Packly quickstart: prove the connection works, price two boxes, list recent orders.

Runs unchanged against the local sandbox (``packly-sandbox --port 8089``) with the connection
``packly_default``, e.g.::

    export AIRFLOW_CONN_PACKLY_DEFAULT='{"conn_type": "packly", "login": "sandbox-client-id",
        "password": "sandbox-client-secret", "host": "http://127.0.0.1:8089",
        "extra": {"environment": "sandbox"}}'
    airflow dags test packly_quickstart

The last task logs one line starting with ``Packly result:`` followed by JSON.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_packly.operators.packly import PacklyOrdersOperator, PacklyQuotationOperator

log = logging.getLogger(__name__)

ITEMS = [
    {
        "article": "s020_v1",
        "material": "SBS300",
        "width": 120,
        "depth": 80,
        "height": 40,
        "references": [{"quantity": 500}],
        "printing": True,
        "manufacturing_time": "standard",
    },
    {
        "article": "s001_v0",
        "material": "KRAFT250",
        "width": 200,
        "depth": 150,
        "height": 100,
        "references": [{"quantity": 250}],
    },
]


@dag(
    dag_id="packly_quickstart",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["packly", "example"],
    doc_md=__doc__,
)
def packly_quickstart() -> None:
    @task
    def check_token() -> dict[str, bool]:
        """Obtain an access token to prove the credentials work; the token itself stays here."""
        from airflow_provider_packly.hooks.packly import PacklyHook

        with PacklyHook("packly_default") as hook:
            hook.get_token()
        return {"token_ok": True}

    quotation = PacklyQuotationOperator(task_id="get_quotation", items=ITEMS, shipping="IT")
    orders = PacklyOrdersOperator(task_id="list_orders", max_orders=20)

    @task
    def summarize(token: dict[str, bool], quotation: Any, orders: list[dict[str, Any]]) -> dict[str, Any]:
        # Packly documents the quotation's shape only as far as "request"; read it defensively.
        body = quotation.get("response") if isinstance(quotation, dict) else None
        body = body if isinstance(body, dict) else {}
        summary = {
            "token_ok": token["token_ok"],
            "quotation_total": body.get("total_amount_tax_included"),
            "currency": body.get("currency"),
            "orders": len(orders),
            "statuses": dict(sorted(Counter(str(o.get("status")) for o in orders).items())),
        }
        log.info("Packly result: %s", json.dumps(summary, sort_keys=True))
        return summary

    token = check_token()
    token >> [quotation, orders]
    summarize(token, quotation.output, orders.output)


packly_quickstart()
