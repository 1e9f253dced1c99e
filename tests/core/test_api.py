"""``core.api``: Packly's endpoints as specs (path, query builder, reader) and the order pager."""

from __future__ import annotations

import base64
import json

import pytest

from airflow_provider_packly import resources
from airflow_provider_packly.core import api
from airflow_provider_packly.core.api import (
    DIELINE,
    ENDPOINTS,
    ORDERS,
    QUOTATION,
    Endpoint,
    OrderPager,
    Reply,
    find_order,
    json_reader,
)
from airflow_provider_packly.core.errors import PacklyError, PacklyValidationError
from airflow_provider_packly.core.waiting import ORDER_STATUSES, PRODUCT_STATUSES

from .purity import modules_loaded_by

ITEM = {"article": "s020_v1", "material": "SBS300", "width": 100, "depth": 50, "height": 20.5}


def test_api_loads_no_airflow_and_no_httpx():
    assert not modules_loaded_by("airflow_provider_packly.core.api") & {"airflow", "httpx"}


def test_every_documented_endpoint_has_one_spec():
    assert ENDPOINTS == {
        "/v1/reseller/dieline": DIELINE,
        "/v1/reseller/quotation": QUOTATION,
        "/v1/reseller/orders": ORDERS,
    }
    assert (DIELINE.path, QUOTATION.path, ORDERS.path) == (api.DIELINE_PATH, api.QUOTATION_PATH, api.ORDERS_PATH)


def test_a_spec_checks_its_arguments_before_anything_is_sent():
    assert DIELINE.query("s020_v1", "SBS300", "100", 50, 20.5, type="json") == {
        "article": "s020_v1",
        "material": "SBS300",
        "width": "100",
        "depth": "50",
        "height": "20.5",
        "type": "json",
    }
    with pytest.raises(PacklyValidationError, match="at most two decimals"):
        DIELINE.query("s020_v1", "SBS300", "100.123", 50, 20)
    with pytest.raises(PacklyValidationError, match="sort must be 'asc' or 'desc'"):
        ORDERS.query(0, 50, "up")
    assert ("items[0][article]", "s020_v1") in QUOTATION.query([ITEM], "it")
    assert ("shipping", "IT") in QUOTATION.query([ITEM], "it")


def reply(document: object = None, *, content: bytes | None = None, **query: str) -> Reply:
    """A 200 answer to a GET with ``query``: ``document`` as JSON, or ``content`` as it is."""
    body = json.dumps(document).encode() if content is None else content
    return Reply("GET", "/v1/reseller/x", 200, "application/json", body, query)


def test_a_spec_reads_its_answer():
    pdf = b"%PDF-1.7 box"
    document = {"response": {"buffer": base64.b64encode(pdf).decode(), "mime_type": "application/pdf"}}
    assert DIELINE.read(reply(document, type="json"))["pdf"] == pdf
    assert DIELINE.read(reply(content=pdf, type="pdf")) == pdf  # type=pdf: the body is the PDF
    assert ORDERS.read(reply({"request": {}, "response": [{"id": "ORD-1"}]})) == [{"id": "ORD-1"}]
    quotation = {"request": {}, "response": {"total": 12}}
    assert QUOTATION.read(reply(quotation)) == quotation  # undocumented shape: handed over whole
    with pytest.raises(PacklyError, match="no response list"):
        ORDERS.read(reply({"response": {}}))


def test_a_reply_that_is_not_json_says_what_it_was():
    with pytest.raises(
        PacklyError, match=r"GET /v1/reseller/x with HTTP 200 but the body was not JSON \(text/html, 4 bytes\)"
    ):
        Reply("GET", "/v1/reseller/x", 200, "text/html; charset=utf-8", b"<h1>").json()


def test_a_new_get_endpoint_is_one_spec():
    """What adding an endpoint looks like: the spec alone builds and reads it."""
    spec = Endpoint(
        "/v1/reseller/materials",
        lambda *, article: {"article": api.validate_code(article, "article")},
        json_reader(len),
    )
    assert spec.query(article=" s020_v1 ") == {"article": "s020_v1"}
    assert spec.read(reply([1, 2])) == 2


def test_the_pager_stops_at_an_empty_or_repeated_page():
    pager = OrderPager(limit=2, sort="asc")
    assert pager.params() == {"page": "0", "limit": "2", "sort": "asc"}
    first = {"response": [{"id": "A"}, {"id": "B"}]}
    assert pager.accept(first) == [{"id": "A"}, {"id": "B"}]
    assert pager.params()["page"] == "1"
    assert pager.accept(first) == [] and pager.done  # a server that ignores ``page``
    pager = OrderPager()
    assert pager.accept({"response": []}) == [] and pager.done


def test_find_order_compares_ids_as_strings():
    assert find_order([{"id": 7, "status": "paid"}], "7") == {"id": 7, "status": "paid"}
    assert find_order([{"id": "8"}], "7") is None


def test_the_resources_module_is_a_shim_of_the_same_objects():
    for name in resources.__all__:
        if hasattr(api, name):
            assert getattr(resources, name) is getattr(api, name), name
    assert resources.ORDER_STATUSES is ORDER_STATUSES and resources.PRODUCT_STATUSES is PRODUCT_STATUSES
