"""Test DAG of the real-path suite: use the Packly connection named by the ``conn_id`` param.

The browser test saves a connection through the UI's Add form and triggers this DAG with its
id, so a real task run proves the saved connection works (token, then an orders call).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="real_airflow_use_connection",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"conn_id": Param("packly_default", type="string")},
    tags=["packly", "test"],
)
def real_airflow_use_connection() -> None:
    @task
    def list_orders(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow_provider_packly.hooks.packly import PacklyHook

        with PacklyHook((params or {})["conn_id"]) as hook:
            orders = list(hook.iter_orders(limit=10))
        return {"orders": len(orders)}

    list_orders()


real_airflow_use_connection()
