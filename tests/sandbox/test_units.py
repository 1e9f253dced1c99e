"""Pure functions of the sandbox: bracket parsing, order timelines, PDF padding, config."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_packly.sandbox import SandboxConfig
from airflow_provider_packly.sandbox.app import accepts_gzip
from airflow_provider_packly.sandbox.dieline import Box, dieline_pdf, pdf_padding
from airflow_provider_packly.sandbox.orders import (
    ORDER_TIMELINE,
    build_order,
    list_orders,
    order_status,
    product_status,
)
from airflow_provider_packly.sandbox.quotation import BracketQueryError, parse_bracket_query
from tests.sandbox.helpers import assert_valid_pdf


# -- parse_bracket_query ---------------------------------------------------------------------------
def test_parse_bracket_query_nested_lists_and_objects() -> None:
    pairs = [
        ("items[0][article]", "s020_v1"),
        ("items[0][references][0][quantity]", "500"),
        ("items[1][article]", "s001_v0"),
        ("items[0][printing]", "true"),
        ("shipping", "IT"),
    ]
    assert parse_bracket_query(pairs) == {
        "items": [
            {"article": "s020_v1", "references": [{"quantity": "500"}], "printing": "true"},
            {"article": "s001_v0"},
        ],
        "shipping": "IT",
    }


def test_parse_bracket_query_orders_indices_numerically() -> None:
    pairs = [(f"a[{i}]", str(i)) for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9)]
    assert parse_bracket_query(pairs) == {"a": [str(i) for i in range(11)]}


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("a[0]", "x"), ("a[2]", "y")], {"a": {"0": "x", "2": "y"}}),  # gap: stays a dict
        ([("a[01]", "x")], {"a": {"01": "x"}}),
        ([("tags[]", "a"), ("tags[]", "b")], {"tags": ["a", "b"]}),
        ([("a[0][]", "a"), ("a[0][]", "b")], {"a": [["a", "b"]]}),
        ([("k", "1"), ("k", "2")], {"k": "2"}),  # repeated plain key: last wins
        ([("items[0", "x")], {"items[0": "x"}),  # not bracket notation: verbatim
        ([("a[b]", "")], {"a": {"b": ""}}),
        ([], {}),
    ],
)
def test_parse_bracket_query_edge_cases(pairs: list[tuple[str, str]], expected: dict[str, object]) -> None:
    assert parse_bracket_query(pairs) == expected


@pytest.mark.parametrize(
    "pairs",
    [
        [("a", "1"), ("a[b]", "2")],
        [("a[b]", "2"), ("a", "1")],
        [("a[b]", "1"), ("a[b][c]", "2")],
        [("a[][b]", "1")],
        [("a[b]", "1"), ("a[]", "2")],
    ],
)
def test_parse_bracket_query_rejects_conflicts(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(BracketQueryError) as info:
        parse_bracket_query(pairs)
    assert info.value.name == "a"


# -- order timelines -------------------------------------------------------------------------------
def test_ord_0001_timeline() -> None:
    assert [order_status(1, s) for s in (0, 0.99, 1, 2, 3, 3.99, 4, 1000)] == [
        "waiting_execute_payment",
        "waiting_execute_payment",
        "pending_payment",
        "paid",
        "in_processing",
        "in_processing",
        "closed",
        "closed",
    ]
    assert [product_status(1, s) for s in (0, 1, 2, 3, 3.49, 3.5, 4)] == [
        "waiting_execute_payment",
        "pending",
        "waiting_upload_confirmation",
        "waiting_file_check",
        "waiting_file_check",
        "in_processing",
        "shipped",
    ]


def test_special_orders() -> None:
    assert {order_status(2, s) for s in (0, 3, 100)} == {"deleted"}
    assert {product_status(2, s) for s in (0, 3, 100)} == {"deleted"}
    assert [order_status(7, s) for s in (0, 1, 2, 100)] == [
        "waiting_execute_payment",
        "pending_payment",
        "canceled",
        "canceled",
    ]
    assert product_status(7, 2) == "canceled"
    assert order_status(17, 0) == "closed"
    for number in (14, 21, 28):
        assert order_status(number, 100) == "canceled"


def test_order_status_tolerates_float_steps() -> None:
    # 0.4 / 0.1 == 3.9999999999999996 in floating point; four steps must still close.
    orders = list_orders(order_count=1, elapsed_seconds=0.4, step_seconds=0.1, page=0, limit=1, descending=False)
    assert orders[0]["status"] == "closed"


def test_every_state_is_documented_and_products_follow_orders() -> None:
    documented_products = {
        "waiting_execute_payment",
        "pending",
        "waiting_upload_confirmation",
        "waiting_file_check",
        "in_processing",
        "waiting_upload",
        "shipped",
        "canceled",
        "deleted",
    }
    documented_orders = {*ORDER_TIMELINE, "canceled", "deleted"}
    seen: set[str] = set()
    for number in range(1, 26):
        previous = -1
        for tenth in range(200):
            steps = tenth / 10
            status = order_status(number, steps)
            assert status in documented_orders
            seen.add(status)
            if status in ORDER_TIMELINE:  # regular orders never move backwards
                assert ORDER_TIMELINE.index(status) >= previous
                previous = ORDER_TIMELINE.index(status)
            order = build_order(number, steps)
            for product in order["items"]:
                assert product["status"] in documented_products
                if status == "closed":
                    assert product["status"] == "shipped"
                if status in ("canceled", "deleted"):
                    assert product["status"] == status
    assert seen == documented_orders


def test_orders_are_deterministic() -> None:
    assert build_order(5, 1.5) == build_order(5, 1.5)
    assert build_order(5, 1.5)["total_amount_tax_excluded"] != build_order(6, 1.5)["total_amount_tax_excluded"]


# -- PDF, gzip, config -----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 2, 79, 80, 81, 12345])
def test_pdf_padding_has_the_exact_size(size: int) -> None:
    padding = pdf_padding(size)
    assert len(padding) == size
    assert all(line.startswith(b"%") or line == b"" for line in padding.split(b"\n"))
    box = Box("s020_v1", "SBS300", Decimal(100), Decimal(50), Decimal(30))
    assert_valid_pdf(dieline_pdf(box, padding_bytes=size))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("deflate", False),
        ("", False),
        ("identity", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_config_validation_and_repr_hides_secrets() -> None:
    config = SandboxConfig()
    assert config.credentials["sandbox"] == ("sandbox-client-id", "sandbox-client-secret")
    assert config.credentials["live"] == ("live-client-id", "live-client-secret")
    assert "secret" not in repr(config)
    with pytest.raises(ValueError, match="no credentials"):
        SandboxConfig(environment="staging")
    with pytest.raises(ValueError):
        SandboxConfig(order_step_seconds=0)
    with pytest.raises(ValueError):
        SandboxConfig(token_lifetime=0)
