"""The dieline's outlet Asset through a real Airflow: ``airflow dags test`` against the sandbox.

A producer DAG writes two dielines: one to a path known when the file is parsed (the operator
declares its ``Asset``), one to a templated path with an ``AssetAlias`` in ``outlets``. Two
consumer DAGs are scheduled, one on the asset, one on the alias. After the producer's run the
metadata database holds an asset event per file (with ``bytes`` and ``sha256``) and a queued run
for each consumer: what the scheduler starts them from.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_packly.sandbox import run_sandbox
from scripts.run_examples import airflow_environment

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")
TIMEOUT = 300

DAGS = """\
import pendulum
from airflow.sdk import Asset, AssetAlias, dag, task
from airflow_provider_packly.operators.packly import PacklyDielineOperator

BOX = dict(article="s020_v1", material="SBS300", width=120, depth=80, height=40)
OUT = {out!r}
START = pendulum.datetime(2026, 1, 1, tz="UTC")


@dag(dag_id="dieline_producer", schedule=None, start_date=START, catchup=False, params={{"out": OUT}})
def producer():
    PacklyDielineOperator(task_id="known_path", **BOX, output_path=OUT + "/known.pdf")
    PacklyDielineOperator(
        task_id="templated_path",
        **BOX,
        output_path="{{{{ params.out }}}}/templated.pdf",
        outlets=[AssetAlias("packly-dielines")],
    )


@dag(dag_id="on_known_dieline", schedule=[Asset("file://" + OUT + "/known.pdf")], start_date=START, catchup=False)
def on_known_dieline():
    task(lambda: None, task_id="use")()


@dag(dag_id="on_any_dieline", schedule=[AssetAlias("packly-dielines")], start_date=START, catchup=False)
def on_any_dieline():
    task(lambda: None, task_id="use")()


producer()
on_known_dieline()
on_any_dieline()
"""

QUERY = """\
import json
from sqlalchemy import select
from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
from airflow.utils.session import create_session

with create_session() as session:
    events = [
        {"uri": e.asset.uri, "extra": e.extra, "aliases": sorted(a.name for a in e.source_aliases)}
        for e in session.scalars(select(AssetEvent))
    ]
    queued = sorted(
        [dag_id, uri]
        for dag_id, uri in session.execute(
            select(AssetDagRunQueue.target_dag_id, AssetModel.uri).join(
                AssetModel, AssetModel.id == AssetDagRunQueue.asset_id
            )
        )
    )
print("RESULT " + json.dumps({"events": events, "queued": queued}))
"""


def airflow(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.airflow_cli
@pytest.mark.integration
def test_a_dieline_run_emits_asset_events_that_schedule_downstream_dags(tmp_path):
    out = tmp_path / "dielines"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "dieline_assets.py").write_text(DAGS.format(out=str(out)))
    with run_sandbox() as sandbox:
        env = airflow_environment(tmp_path / "airflow-home", sandbox.base_url)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"  # a paused consumer is not queued
        airflow(env, "db", "migrate")
        airflow(env, "dags", "reserialize")  # the consumers' schedules, as the DAG processor stores them
        airflow(env, "dags", "test", "dieline_producer")
    done = subprocess.run([sys.executable, "-c", QUERY], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    known, templated = out / "known.pdf", out / "templated.pdf"

    def extra(path: Path) -> dict[str, object]:
        data = path.read_bytes()
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    assert sorted(result["events"], key=lambda e: e["uri"]) == [
        {"uri": known.as_uri(), "extra": extra(known), "aliases": []},
        {"uri": templated.as_uri(), "extra": extra(templated), "aliases": ["packly-dielines"]},
    ]
    assert sorted(p.name for p in out.iterdir()) == ["known.pdf", "templated.pdf"]  # no temporary file
    assert ["on_known_dieline", known.as_uri()] in result["queued"]
    assert any(dag_id == "on_any_dieline" for dag_id, _ in result["queued"]), result["queued"]
