"""``core.waiting``: statuses as enums, conditions and events that stay plain data."""

from __future__ import annotations

import json

import pytest

from airflow_provider_packly.core import waiting
from airflow_provider_packly.core.errors import PacklyValidationError
from airflow_provider_packly.core.waiting import (
    EVENT_STATUSES,
    ORDER_STATUSES,
    PRODUCT_STATUSES,
    ConditionKind,
    EventStatus,
    OrderCondition,
    OrderStatus,
    ProductStatus,
    make_event,
    normalise_statuses,
    validate_event,
)
from airflow_provider_packly.triggers import rules

from .purity import modules_loaded_by

#: As /work/shared/packly-api.md lists them (packly.io/orders).
DOCUMENTED_ORDER = (
    "waiting_execute_payment",
    "pending_payment",
    "paid",
    "in_processing",
    "closed",
    "canceled",
    "deleted",
)
DOCUMENTED_PRODUCT = (
    "waiting_execute_payment",
    "pending",
    "waiting_upload_confirmation",
    "waiting_file_check",
    "in_processing",
    "waiting_upload",
    "shipped",
    "canceled",
    "deleted",
)


def test_waiting_loads_no_airflow_and_no_httpx():
    assert not modules_loaded_by("airflow_provider_packly.core.waiting") & {"airflow", "httpx"}


def test_the_enums_hold_the_documented_statuses_and_the_old_tuples_follow():
    assert OrderStatus.values() == ORDER_STATUSES == DOCUMENTED_ORDER
    assert ProductStatus.values() == PRODUCT_STATUSES == DOCUMENTED_PRODUCT
    assert EVENT_STATUSES == ("success", "failed", "timeout", "error") == EventStatus.values()
    assert rules.ORDER_STATUSES is ORDER_STATUSES and rules.OrderStatus is OrderStatus


def test_terminal_statuses_are_the_ones_the_names_say_end():
    assert {s.value for s in OrderStatus if s.is_terminal} == {"closed", "canceled", "deleted"}
    assert {s.value for s in ProductStatus if s.is_terminal} == {"shipped", "canceled", "deleted"}
    assert not OrderStatus.PAID.is_terminal and not ProductStatus.WAITING_UPLOAD.is_terminal


def test_a_status_is_its_plain_string():
    assert (
        OrderStatus.CLOSED == "closed" and str(OrderStatus.CLOSED) == "closed" and f"{OrderStatus.CLOSED}" == "closed"
    )
    assert json.dumps([OrderStatus.CLOSED]) == '["closed"]'
    assert OrderStatus("paid") is OrderStatus.PAID
    assert OrderStatus.is_documented("paid") and not OrderStatus.is_documented("shipped")
    assert ProductStatus.is_documented(ProductStatus.SHIPPED) and not ProductStatus.is_documented(None)


def test_members_are_accepted_and_stored_as_plain_strings():
    condition = OrderCondition(ConditionKind.ORDER_STATUS, (OrderStatus.CLOSED,), (OrderStatus.CANCELED,))
    assert condition == OrderCondition("order_status", ("closed",), ("canceled",))
    assert condition.kind is ConditionKind.ORDER_STATUS
    data = condition.to_dict()
    assert data == {"kind": "order_status", "target_statuses": ["closed"], "failure_statuses": ["canceled"]}
    assert all(type(value) is str for value in [data["kind"], *data["target_statuses"], *data["failure_statuses"]])
    assert OrderCondition.from_dict(json.loads(json.dumps(data))) == condition
    (status,) = normalise_statuses([OrderStatus.PAID], name="statuses", allowed=ORDER_STATUSES)
    assert type(status) is str and status == "paid"


def test_each_kind_allows_its_own_statuses():
    assert ConditionKind.ORDER_STATUS.statuses is OrderStatus
    assert ConditionKind.PRODUCTS_STATUS.statuses is ProductStatus
    with pytest.raises(PacklyValidationError, match="unknown status"):
        OrderCondition("order_status", ("shipped",))
    OrderCondition("products_status", ("shipped",))
    with pytest.raises(PacklyValidationError, match="kind must be 'order_status' or 'products_status'"):
        OrderCondition("invoice_status", ("paid",))  # type: ignore[arg-type]


def test_an_undocumented_status_is_named_as_such():
    condition = OrderCondition("order_status", ("closed",))
    assert "not a status Packly documents" in condition.evaluate({"id": "O1", "status": "on_hold"}).message
    assert "not a status" not in condition.evaluate({"id": "O1", "status": "paid"}).message


def test_events_carry_plain_strings():
    event = make_event(EventStatus.SUCCESS, "done", order_id="O1")
    assert event == {"status": "success", "message": "done", "order_id": "O1"}
    assert type(event["status"]) is str
    assert validate_event(json.loads(json.dumps(event)), required=["order_id"]) == event
    with pytest.raises(ValueError, match="unknown event status"):
        make_event("finished", "?")


def test_the_rules_module_is_a_shim_of_the_same_objects():
    for name in rules.__all__:
        assert getattr(rules, name) is getattr(waiting, name), name
