"""Download a box's dieline (PDF) to storage: a local folder by default, any object store alike.

The file goes to ``{{ params.output_dir }}/dieline-s020_v1-120x80x40.pdf``. ``output_dir`` is
a DAG param defaulting to ``file:///tmp/packly-dielines``. To write to object storage, trigger
the DAG with e.g. ``{"output_dir": "s3://my-bucket/dielines", "output_conn_id": "aws_default"}``
(the matching provider, here apache-airflow-providers-amazon, must be installed); ``gs://``
with a Google connection works the same way. The download is streamed, hashed while written,
and never leaves a partial file behind.

Run against the local sandbox with ``airflow dags test packly_dieline_to_storage``; the last
task logs ``Packly result:`` followed by JSON (path, bytes, sha256).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_packly.operators.packly import PacklyDielineOperator

log = logging.getLogger(__name__)


@dag(
    dag_id="packly_dieline_to_storage",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["packly", "example"],
    params={
        "output_dir": Param("file:///tmp/packly-dielines", type="string", description="Folder or bucket URL."),
        "output_conn_id": Param(None, type=["null", "string"], description="Storage connection, e.g. aws_default."),
    },
    doc_md=__doc__,
)
def packly_dieline_to_storage() -> None:
    dieline = PacklyDielineOperator(
        task_id="download_dieline",
        article="s020_v1",
        material="SBS300",
        width=120,
        depth=80,
        height=40,
        output_path="{{ params.output_dir.rstrip('/') }}/dieline-s020_v1-120x80x40.pdf",
        output_conn_id="{{ params.output_conn_id or '' }}",
    )

    @task
    def summarize(result: dict[str, Any]) -> dict[str, Any]:
        log.info("Packly result: %s", json.dumps(result, sort_keys=True))
        return result

    summarize(dieline.output)


packly_dieline_to_storage()
