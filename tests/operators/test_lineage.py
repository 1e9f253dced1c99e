"""Assets and lineage of the operators: the dieline's outlet ``Asset``, hook lineage, OpenLineage facets.

The OpenLineage provider is installed in the test environment (the ``openlineage`` extra is in
the test group); ``test_importing_the_operators_does_not_import_openlineage`` holds the
DAG-parse side to paying nothing for it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import fsspec
import httpx
import pytest
from airflow.providers.common.compat.openlineage.facet import Dataset
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.sdk.lineage import HookLineageCollector

from airflow_provider_packly.operators.packly import (
    PacklyDielineOperator,
    PacklyOperator,
    PacklyOrdersOperator,
    PacklyQuotationOperator,
    _PacklyBaseOperator,
)

from ..triggers.fakes import FakePackly, page

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = "http://127.0.0.1:8089"  # the fakes' connection
BOX = {"article": "s020_v1", "material": "SBS300", "width": 120, "depth": 80, "height": 40}
ITEM = {**BOX, "references": [{"quantity": 500}]}
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
DIGEST = hashlib.sha256(PDF).hexdigest()


@pytest.fixture
def fake(mocker):
    packly = FakePackly(httpx.Response(200, content=PDF, headers={"content-type": "application/pdf"}))
    mocker.patch.object(_PacklyBaseOperator, "get_hook", lambda self: packly.hook())
    return packly


@pytest.fixture
def collector(mocker) -> HookLineageCollector:
    """A recording hook-lineage collector (Airflow's default records nothing without a reader)."""
    recording = HookLineageCollector()
    mocker.patch("airflow.sdk.lineage.get_hook_lineage_collector", return_value=recording)
    return recording


def context(**extra):
    return {"params": {}, **extra}


# -- the outlet Asset -------------------------------------------------------------------------------------


def test_a_known_output_path_is_declared_as_an_outlet_asset(tmp_path):
    local = PacklyDielineOperator(task_id="d", **BOX, output_path=str(tmp_path / "box.pdf"))
    assert local.outlets == [Asset((tmp_path / "box.pdf").as_uri())]

    remote = ObjectStoragePath("s3://bucket/dielines/box.pdf", conn_id="aws_default")
    stored = PacklyDielineOperator(task_id="s", **BOX, output_path=remote)
    assert [asset.uri for asset in stored.outlets] == ["s3://bucket/dielines/box.pdf"]  # no connection id

    by_url = PacklyDielineOperator(task_id="u", **BOX, output_path="s3://bucket/box.pdf", output_conn_id="aws_default")
    assert [asset.uri for asset in by_url.outlets] == ["s3://bucket/box.pdf"]


def test_an_output_path_known_only_at_run_time_declares_no_asset_of_its_own():
    templated = PacklyDielineOperator(task_id="t", **BOX, output_path="{{ params.dir }}/box.pdf")
    assert templated.outlets == []
    relative = PacklyDielineOperator(task_id="r", **BOX, output_path="dielines/box.pdf")
    assert relative.outlets == []  # absolute only on the worker that writes it
    alias = AssetAlias("packly-dielines")
    with_alias = PacklyDielineOperator(task_id="a", **BOX, output_path="{{ params.dir }}/box.pdf", outlets=[alias])
    assert with_alias.outlets == [alias]


def test_an_asset_the_dag_already_declares_is_not_added_twice(tmp_path):
    mine = Asset(name="box", uri=(tmp_path / "box.pdf").as_uri())
    op = PacklyDielineOperator(task_id="d", **BOX, output_path=str(tmp_path / "box.pdf"), outlets=[mine])
    assert op.outlets == [mine]


def test_the_run_emits_the_file_to_its_asset_and_to_every_asset_alias(fake, tmp_path, collector):
    target = tmp_path / "box.pdf"
    alias = AssetAlias("packly-dielines")
    op = PacklyDielineOperator(task_id="d", **BOX, output_path=str(target), outlets=[alias])
    events = OutletEventAccessors()
    op.execute(context(outlet_events=events))

    assert events[Asset(target.as_uri())].extra == {"bytes": len(PDF), "sha256": DIGEST}
    [alias_event] = events[alias].asset_alias_events
    assert alias_event.source_alias_name == "packly-dielines"
    assert alias_event.dest_asset_key.uri == target.as_uri()
    assert alias_event.extra == {"bytes": len(PDF), "sha256": DIGEST}


def test_hook_lineage_records_the_final_path_not_the_temporary_file(fake, tmp_path, collector):
    target = tmp_path / "box.pdf"
    PacklyDielineOperator(task_id="d", **BOX, output_path=str(target)).execute(context())
    outputs = [info.asset.uri for info in collector.collected_assets.outputs]
    assert outputs == [target.as_uri()]


def test_a_failed_download_records_no_lineage(fake, tmp_path, collector):
    fake.answers = [httpx.Response(200, content=b"<html>not a pdf</html>")]
    with pytest.raises(Exception, match="not a PDF"):
        PacklyDielineOperator(task_id="d", **BOX, output_path=str(tmp_path / "box.pdf")).execute(context())
    assert collector.collected_assets.outputs == []


# -- OpenLineage ------------------------------------------------------------------------------------------


def test_dieline_facets_name_the_endpoint_read_and_the_file_written(fake, tmp_path):
    target = tmp_path / "box.pdf"
    op = PacklyDielineOperator(task_id="d", **BOX, output_path=str(target))
    op.execute(context())
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage.inputs == [Dataset(namespace=BASE_URL, name="/v1/reseller/dieline")]
    assert lineage.outputs == [Dataset(namespace="file", name=str(target))]


def test_dieline_facets_for_object_storage(fake):
    fsspec.filesystem("memory").store.clear()
    from airflow.sdk.io import attach

    attach(protocol="memory", fs=fsspec.filesystem("memory"))
    op = PacklyDielineOperator(task_id="d", **BOX, output_path=ObjectStoragePath("memory://bucket/dielines/box.pdf"))
    op.execute(context())
    assert op.get_openlineage_facets_on_complete(None).outputs == [
        Dataset(namespace="memory://bucket", name="dielines/box.pdf")
    ]


def test_the_other_operators_name_their_endpoint_as_input(fake):
    fake.answers = [httpx.Response(200, json={"response": {"total": 1}})]
    quotation = PacklyQuotationOperator(task_id="q", items=[ITEM])
    quotation.execute(context())
    assert quotation.get_openlineage_facets_on_complete(None).inputs == [
        Dataset(namespace=BASE_URL, name="/v1/reseller/quotation")
    ]

    fake.answers = [page([])]
    orders = PacklyOrdersOperator(task_id="o")
    orders.execute(context())
    facets = orders.get_openlineage_facets_on_complete(None)
    assert (facets.inputs, facets.outputs) == ([Dataset(namespace=BASE_URL, name="/v1/reseller/orders")], [])

    fake.answers = [httpx.Response(200, json={})]
    generic = PacklyOperator(task_id="p", endpoint="/v1/reseller/orders?limit=1")
    generic.execute(context())
    assert generic.get_openlineage_facets_on_complete(None).inputs == [
        Dataset(namespace=BASE_URL, name="/v1/reseller/orders")
    ]


def test_the_openlineage_provider_uses_the_facets(fake, tmp_path):
    from airflow.providers.openlineage.extractors.base import DefaultExtractor
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    op = PacklyDielineOperator(task_id="d", **BOX, output_path=str(tmp_path / "box.pdf"))
    assert ExtractorManager().get_extractor_class(op) is DefaultExtractor
    op.execute(context())
    lineage = DefaultExtractor(op).extract_on_complete(None)
    assert lineage is not None
    assert [(d.namespace, d.name) for d in lineage.inputs] == [(BASE_URL, "/v1/reseller/dieline")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(tmp_path / "box.pdf"))]


def test_importing_the_operators_does_not_import_openlineage():
    """Parsing a DAG with the operators loads nothing of OpenLineage beyond what ``import airflow.sdk``
    loads anyway (Airflow reads every installed provider's ``get_provider_info``)."""
    code = (
        "import sys\n"
        "import airflow.sdk\n"
        "baseline = {m for m in sys.modules if 'openlineage' in m}\n"
        "import airflow_provider_packly.operators.packly as ops, airflow_provider_packly.sensors.packly\n"
        "ops.PacklyDielineOperator(task_id='d', article='s020_v1', material='SBS300', width=1, depth=1, height=1,\n"
        "                          output_path='/tmp/packly-parse-check/box.pdf')\n"
        "added = sorted(m for m in sys.modules if 'openlineage' in m and m not in baseline)\n"
        "assert not added, added\n"
        "assert not any(m == 'openlineage' or m.startswith('openlineage.') for m in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
