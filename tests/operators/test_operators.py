"""The Packly operators: validation at parse time, execute with a scripted Packly and the sandbox."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import fsspec
import httpx
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowException

from airflow_provider_packly.exceptions import PacklyAPIError, PacklyError, PacklyTransportError
from airflow_provider_packly.operators.packly import (
    PacklyDielineOperator,
    PacklyOperator,
    PacklyOrdersOperator,
    PacklyQuotationOperator,
    _PacklyBaseOperator,
)
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

from ..fakes import FakePackly, envelope, order, page, sandbox_connection_json

ITEM = {
    "article": "s020_v1",
    "material": "SBS300",
    "width": 120,
    "depth": 80,
    "height": 40,
    "references": [{"quantity": 500}],
}
BOX = {"article": "s020_v1", "material": "SBS300", "width": 120, "depth": 80, "height": 40}
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"


@pytest.fixture
def fake(mocker):
    """A scripted Packly that every operator's hook talks to; tests set ``fake.answers``."""
    packly = FakePackly(httpx.Response(200, json={}))
    hooks = []

    def make(self):
        hooks.append(packly.hook())
        return hooks[-1]

    mocker.patch.object(_PacklyBaseOperator, "get_hook", make)
    packly.hooks = hooks
    yield packly
    for hook in hooks:  # every operator closed its hook
        assert hook._client is None


def context(**extra):
    return {"params": {}, "ds": "2026-03-01", **extra}


# -- construction-time validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"width": -5}, "width must be a positive number"),
        ({"depth": 0}, "depth must be a positive number"),
        ({"height": 1.234}, "at most two decimals"),
        ({"article": "no spaces allowed"}, "article must be a Packly code"),
        ({"output_path": " "}, "output_path must not be empty"),
    ],
)
def test_dieline_arguments_are_checked_when_the_dag_is_parsed(overrides, match):
    with pytest.raises(PacklyValidationError, match=match):
        PacklyDielineOperator(task_id="d", **{**BOX, "output_path": "/tmp/x.pdf", **overrides})


def test_templated_dieline_values_wait_for_execute_time():
    op = PacklyDielineOperator(task_id="d", **{**BOX, "width": "{{ params.w }}", "output_path": "{{ params.out }}"})
    assert op.width == "{{ params.w }}"  # kept as given; rendered by Airflow
    with pytest.raises(PacklyValidationError, match="depth"):  # known values are still checked
        PacklyDielineOperator(task_id="d", **{**BOX, "width": "{{ params.w }}", "depth": -1, "output_path": "/x.pdf"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"items": []}, "at least one item"),
        ({"items": [{**ITEM, "width": -1}]}, r"items\[0\]\.width"),
        ({"items": [ITEM, {**ITEM, "references": [{"quantity": 0}]}]}, r"items\[1\]\.references"),
        ({"items": [ITEM], "shipping": "Italy"}, "two-letter country code"),
        ({"items": {"article": "s020_v1"}}, "list of quotation items"),
    ],
)
def test_quotation_arguments_are_checked_when_the_dag_is_parsed(kwargs, match):
    with pytest.raises(PacklyValidationError, match=match):
        PacklyQuotationOperator(task_id="q", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"statuses": ["closed", "shipped"]}, "unknown status"),
        ({"since": "2026-01-01"}, "needs timestamp_field"),
        ({"use_data_interval": True}, "Packly documents no timestamp field"),
        ({"since": "last tuesday", "timestamp_field": "created_at"}, "ISO-8601"),
        ({"max_orders": 0}, "max_orders"),
        ({"page_size": 0}, "limit"),
        ({"sort": "newest"}, "sort"),
    ],
)
def test_orders_arguments_are_checked_when_the_dag_is_parsed(kwargs, match):
    with pytest.raises(PacklyValidationError, match=match):
        PacklyOrdersOperator(task_id="o", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": "/x", "method": "FETCH"}, "method"),
        ({"endpoint": "/x", "response_check": 3}, "callable"),
    ],
)
def test_generic_operator_arguments_are_checked(kwargs, match):
    with pytest.raises(PacklyValidationError, match=match):
        PacklyOperator(task_id="p", **kwargs)


# -- PacklyOperator ----------------------------------------------------------------------------------


def test_generic_call_returns_json(fake):
    fake.answers = [httpx.Response(200, json={"response": [1, 2]})]
    op = PacklyOperator(task_id="p", endpoint="/v1/reseller/orders", request_params={"page": 0})
    assert op.execute(context()) == {"response": [1, 2]}
    assert fake.calls == [("GET", "/v1/reseller/orders", {"page": "0"})]


def test_response_check_and_filter_get_the_response_and_the_context(fake):
    fake.answers = [httpx.Response(200, json={"response": [{"id": "A"}, {"id": "B"}]})]
    seen = {}

    def check(response, ds, params):
        seen["check"] = (response.status_code, ds, params)
        return True

    def keep_ids(response, **context):
        seen["filter_keys"] = sorted(context)
        return [o["id"] for o in response.json()["response"]]

    op = PacklyOperator(task_id="p", endpoint="/v1/reseller/orders", response_check=check, response_filter=keep_ids)
    assert op.execute(context(params={"x": 1})) == ["A", "B"]
    assert seen["check"] == (200, "2026-03-01", {"x": 1})
    assert seen["filter_keys"] == ["ds", "params"]


def test_failed_response_check_fails_the_task(fake):
    fake.answers = [httpx.Response(200, json={"response": []})]
    op = PacklyOperator(
        task_id="p", endpoint="/v1/reseller/orders", response_check=lambda response: bool(response.json()["response"])
    )
    with pytest.raises(
        AirflowException, match=r"response_check returned a false value .* GET /v1/reseller/orders \(HTTP 200\)"
    ):
        op.execute(context())


def test_packly_refusal_fails_with_the_api_error(fake):
    fake.answers = [envelope(400, "VALIDATION_ERROR", "Some parameters are wrong or missing")]
    op = PacklyOperator(task_id="p", endpoint="/v1/reseller/dieline", method="post", json={"a": 1})
    with pytest.raises(PacklyAPIError, match="VALIDATION_ERROR: Some parameters are wrong or missing") as caught:
        op.execute(context())
    assert caught.value.http_status == 400
    assert fake.calls[0][0] == "POST"


def test_generic_operator_templates(fake):
    op = PacklyOperator(
        task_id="p", endpoint="/v1/reseller/{{ params.what }}", request_params={"page": "{{ params.page }}"}
    )
    assert op.template_fields == ("endpoint", "method", "request_params", "json", "data", "headers")
    op.render_template_fields(context(params={"what": "orders", "page": 3}))
    fake.answers = [httpx.Response(204)]
    assert op.execute(context()) is None
    assert fake.calls == [("GET", "/v1/reseller/orders", {"page": "3"})]


# -- PacklyQuotationOperator -------------------------------------------------------------------------


def test_quotation_sends_bracket_encoded_items(fake):
    fake.answers = [httpx.Response(200, json={"request": {}, "response": {"total_amount_tax_included": 12.5}})]
    op = PacklyQuotationOperator(task_id="q", items=[ITEM], shipping="de")
    assert op.execute(context()) == {"request": {}, "response": {"total_amount_tax_included": 12.5}}
    method, path, query = fake.calls[0]
    assert (method, path) == ("GET", "/v1/reseller/quotation")
    assert query["items[0][article]"] == "s020_v1" and query["items[0][references][0][quantity]"] == "500"
    assert query["shipping"] == "DE"


def test_quotation_items_from_a_template_are_checked_once_rendered(fake):
    op = PacklyQuotationOperator(task_id="q", items="{{ params.boxes }}", shipping="{{ params.country }}")
    op.render_template_fields(context(params={"boxes": [ITEM], "country": "fr"}))
    assert isinstance(op.items, str)  # Jinja rendered the list as text ...
    fake.answers = [httpx.Response(200, json={"response": {}})]
    op.execute(context())
    assert fake.calls[0][2]["items[0][width]"] == "120" and fake.calls[0][2]["shipping"] == "FR"  # ... read back

    bad = PacklyQuotationOperator(task_id="q2", items="{{ params.boxes }}")
    bad.render_template_fields(context(params={"boxes": [{**ITEM, "width": -3}]}))
    with pytest.raises(PacklyValidationError, match=r"items\[0\]\.width"):
        bad.execute(context())
    assert len(fake.calls) == 1  # the bad one never reached Packly


# -- PacklyOrdersOperator ----------------------------------------------------------------------------


def test_paging_stops_at_the_last_page(fake):
    fake.answers = [
        page(order("O5", "closed"), order("O4", "paid")),
        page(order("O3", "closed"), order("O2", "deleted")),
        page(order("O1", "closed")),  # short, but Packly may cap limit: not taken for the last
        page(),  # the empty page ends the listing
        httpx.Response(500),  # never asked for
    ]
    op = PacklyOrdersOperator(task_id="o", page_size=2)
    orders = op.execute(context())
    assert [o["id"] for o in orders] == ["O5", "O4", "O3", "O2", "O1"]
    assert [q["page"] for _, _, q in fake.calls] == ["0", "1", "2", "3"]
    assert {q["limit"] for _, _, q in fake.calls} == {"2"}
    json.dumps(orders)


def test_status_filter_and_max_orders_stop_paging_early(fake):
    fake.answers = [
        page(order("O6", "closed"), order("O5", "paid")),
        page(order("O4", "closed"), order("O3", "closed")),
        page(order("O2", "closed"), order("O1", "closed")),
    ]
    op = PacklyOrdersOperator(task_id="o", statuses={"closed"}, max_orders=2, page_size=2)
    assert [o["id"] for o in op.execute(context())] == ["O6", "O4"]
    assert len(fake.calls) == 2


def test_time_filter_on_a_configured_field(fake):
    fake.answers = [
        page(
            order("O3", "closed", created_at="2026-01-07T09:00:00Z"),
            order("O2", "closed", created_at="2026-01-06T09:00:00Z"),
            order("O1", "closed", created_at="2026-01-05T09:00:00Z"),
        )
    ]
    op = PacklyOrdersOperator(task_id="o", timestamp_field="created_at", use_data_interval=True)
    import pendulum

    ctx = context(
        data_interval_start=pendulum.datetime(2026, 1, 6, tz="UTC"),
        data_interval_end=pendulum.datetime(2026, 1, 7, 9, tz="UTC"),
    )
    assert [o["id"] for o in op.execute(ctx)] == ["O2"]  # start <= t < end


def test_time_filter_with_a_wrong_field_name_fails_clearly(fake):
    fake.answers = [page(order("O1", "closed", created_at="2026-01-05T09:00:00Z"))]
    op = PacklyOrdersOperator(task_id="o", timestamp_field="updated_at", since="{{ ds }}")
    op.render_template_fields(context())
    with pytest.raises(PacklyError, match="no readable timestamp in field 'updated_at'"):
        op.execute(context())


# -- PacklyDielineOperator ---------------------------------------------------------------------------


def test_dieline_is_streamed_to_a_local_path(fake, tmp_path):
    fake.answers = [httpx.Response(200, content=PDF, headers={"content-type": "application/pdf"})]
    target = tmp_path / "new" / "folder" / "box.pdf"
    op = PacklyDielineOperator(task_id="d", **BOX, output_path=str(target))
    result = op.execute(context())
    assert result == {"path": str(target), "bytes": len(PDF), "sha256": hashlib.sha256(PDF).hexdigest()}
    assert target.read_bytes() == PDF
    assert sorted(p.name for p in target.parent.iterdir()) == ["box.pdf"]  # no temporary file left
    assert fake.calls[0][2] == {
        "article": "s020_v1",
        "material": "SBS300",
        "width": "120",
        "depth": "80",
        "height": "40",
        "type": "pdf",
    }


def test_dieline_to_object_storage(fake):
    fsspec.filesystem("memory").store.clear()
    from airflow.sdk.io import attach

    attach(protocol="memory", fs=fsspec.filesystem("memory"))
    fake.answers = [httpx.Response(200, content=PDF)]
    target = ObjectStoragePath("memory://bucket/dielines/box.pdf")
    result = PacklyDielineOperator(task_id="d", **BOX, output_path=target).execute(context())
    assert result == {
        "path": "memory://bucket/dielines/box.pdf",
        "bytes": len(PDF),
        "sha256": hashlib.sha256(PDF).hexdigest(),
    }
    assert target.read_bytes() == PDF


def _broken_stream(request):
    class Broken(httpx.SyncByteStream):
        def __iter__(self):
            yield PDF[:1000]
            raise httpx.ReadError("connection reset")

    return httpx.Response(200, stream=Broken(), headers={"content-type": "application/pdf"})


def test_failed_download_leaves_no_partial_local_file(fake, tmp_path):
    target = tmp_path / "box.pdf"
    target.write_bytes(b"%PDF- the previous good file")
    fake.answers = [_broken_stream]
    with pytest.raises(PacklyTransportError, match="connection broke while Packly's answer"):
        PacklyDielineOperator(task_id="d", **BOX, output_path=str(target)).execute(context())
    assert [p.name for p in tmp_path.iterdir()] == ["box.pdf"]
    assert target.read_bytes() == b"%PDF- the previous good file"  # untouched


def test_failed_download_leaves_no_object_behind(fake):
    from airflow.sdk.io import attach

    memory = fsspec.filesystem("memory")
    memory.store.clear()
    attach(protocol="memory", fs=memory)
    fake.answers = [_broken_stream]
    target = ObjectStoragePath("memory://bucket/broken.pdf")
    with pytest.raises(PacklyTransportError):
        PacklyDielineOperator(task_id="d", **BOX, output_path=target).execute(context())
    assert not target.exists()


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (
            envelope(400, "VALIDATION_ERROR", "material is not known"),
            PacklyAPIError,
            "VALIDATION_ERROR: material is not known",
        ),
        (
            httpx.Response(200, content=b"<html>login</html>", headers={"content-type": "text/html"}),
            PacklyError,
            r"not a PDF \(text/html",
        ),
        (httpx.Response(200, content=b"%PD"), PacklyError, "too short to be a PDF"),
    ],
)
def test_refused_or_wrong_download_writes_nothing(fake, tmp_path, answer, error, match):
    fake.answers = [answer]
    with pytest.raises(error, match=match):
        PacklyDielineOperator(task_id="d", **BOX, output_path=str(tmp_path / "box.pdf")).execute(context())
    assert list(tmp_path.iterdir()) == []


def test_templated_output_path_and_dimensions(fake, tmp_path):
    fake.answers = [httpx.Response(200, content=PDF)]
    op = PacklyDielineOperator(
        task_id="d", **{**BOX, "height": "{{ params.h }}"}, output_path="file://{{ params.dir }}/box-{{ ds }}.pdf"
    )
    op.render_template_fields(context(params={"h": "55.5", "dir": str(tmp_path)}))
    result = op.execute(context())
    assert result["path"] == f"file://{tmp_path}/box-2026-03-01.pdf"
    assert (tmp_path / "box-2026-03-01.pdf").read_bytes() == PDF
    assert fake.calls[0][2]["height"] == "55.5"


# -- against the sandbox over loopback, through the real connection lookup -----------------------------


@pytest.fixture(scope="module")
def sandbox():
    with run_sandbox(SandboxConfig(dieline_padding_bytes=2 * 1024 * 1024)) as running:
        yield running


@pytest.mark.integration
def test_operators_against_the_sandbox(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_PACKLY_DEFAULT", sandbox_connection_json(sandbox.base_url))
    result = PacklyDielineOperator(task_id="d", **BOX, output_path=str(tmp_path / "d.pdf")).execute(context())
    data = Path(result["path"]).read_bytes()
    assert data.startswith(b"%PDF-") and len(data) == result["bytes"] > 2 * 1024 * 1024
    assert hashlib.sha256(data).hexdigest() == result["sha256"]

    quotation = PacklyQuotationOperator(task_id="q", items=[ITEM]).execute(context())
    assert quotation["response"]["total_amount_tax_included"] > 0

    orders = PacklyOrdersOperator(task_id="o", statuses=["deleted"], page_size=7).execute(context())
    assert [o["id"] for o in orders] == ["ORD-0002"]
    assert sandbox.state.api_requests["/v1/reseller/orders"] == 5  # 25 orders, 7 a page, then the empty page

    returned = json.dumps([result, quotation, orders])  # plain data, fit for XCom
    assert sandbox.state.issued_tokens
    for token in sandbox.state.issued_tokens:
        assert token not in returned
    assert "sandbox-client-secret" not in returned


def test_statuses_may_be_one_string_or_a_rendered_list(fake):
    fake.answers = [page(order("O3", "closed"), order("O2", "paid"), order("O1", "deleted"))]
    assert [o["id"] for o in PacklyOrdersOperator(task_id="o", statuses="closed").execute(context())] == ["O3"]
    op = PacklyOrdersOperator(task_id="o2", statuses="{{ params.wanted }}")
    op.render_template_fields(context(params={"wanted": ["paid", "deleted"]}))
    assert [o["id"] for o in op.execute(context())] == ["O2", "O1"]
    bad = PacklyOrdersOperator(task_id="o3", statuses="{{ params.wanted }}")
    bad.render_template_fields(context(params={"wanted": ["shipped"]}))
    with pytest.raises(PacklyValidationError, match="unknown status"):
        bad.execute(context())


def test_a_refused_download_keeps_an_earlier_object():
    from airflow.sdk.io import attach

    memory = fsspec.filesystem("memory")
    memory.store.clear()
    attach(protocol="memory", fs=memory)
    target = ObjectStoragePath("memory://bucket/kept.pdf")
    target.write_bytes(b"%PDF- from yesterday")
    packly = FakePackly(envelope(401, "UNAUTHORIZED", "token refused"))
    op = PacklyDielineOperator(task_id="d", **BOX, output_path=target)
    op.get_hook = lambda: packly.hook()  # this instance only
    with pytest.raises(PacklyAPIError):
        op.execute(context())
    assert target.read_bytes() == b"%PDF- from yesterday"
