"""The pure rules shared by the sensors' poke path and the triggers."""

from __future__ import annotations

import datetime as dt
import json
import pickle

import pytest

from airflow_provider_packly.exceptions import (
    PacklyAPIError,
    PacklyAuthError,
    PacklyError,
    PacklyErrorItem,
    PacklyTransportError,
)
from airflow_provider_packly.resources import PacklyOrderNotFound, PacklyValidationError
from airflow_provider_packly.triggers.rules import (
    EVENT_STATUSES,
    OrderCondition,
    PacklyEventError,
    deadline_after,
    error_from_payload,
    error_to_payload,
    is_templated,
    is_transient,
    make_event,
    parse_deadline,
    validate_event,
)

from ..fakes import order

CLOSED = OrderCondition("order_status", ("closed",), ("canceled", "deleted"))
SHIPPED = OrderCondition("products_status", ("shipped",), ("canceled", "deleted"))


@pytest.mark.parametrize(
    ("condition", "the_order", "outcome"),
    [
        (CLOSED, order("O1", "closed"), "success"),
        (CLOSED, order("O1", "paid"), "waiting"),
        (CLOSED, order("O1", "canceled"), "failed"),
        (CLOSED, order("O1", "deleted"), "failed"),
        (CLOSED, order("O1", "something_new"), "waiting"),
        (CLOSED, {"id": "O1"}, "waiting"),
        (SHIPPED, order("O1", "closed", ["shipped", "shipped"]), "success"),
        (SHIPPED, order("O1", "in_processing", ["shipped", "in_processing"]), "waiting"),
        (SHIPPED, order("O1", "in_processing", ["shipped", "canceled"]), "failed"),
        (SHIPPED, order("O1", "deleted", ["shipped"]), "failed"),
        (SHIPPED, order("O1", "closed", []), "waiting"),  # no products: never "all shipped"
    ],
)
def test_one_rule_decides_success_failure_and_waiting(condition, the_order, outcome):
    result = condition.evaluate(the_order)
    assert result.outcome == outcome
    assert "O1" in result.message
    assert result.order_status == the_order.get("status")


def test_failure_message_says_why():
    result = SHIPPED.evaluate(order("O9", "in_processing", ["shipped", "canceled"]))
    assert result.message == "Packly order O9: O9-P2 is 'canceled', a failure status."
    assert result.product_statuses == {"O9-P1": "shipped", "O9-P2": "canceled"}


def test_condition_round_trips_as_plain_data():
    data = SHIPPED.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert OrderCondition.from_dict(data) == SHIPPED


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "order_status", "target_statuses": ("shipped",)}, "unknown status"),
        ({"kind": "order_status", "target_statuses": ()}, "at least one"),
        (
            {"kind": "order_status", "target_statuses": ("closed",), "failure_statuses": ("closed",)},
            "both a target and a failure",
        ),
        ({"kind": "order_status", "target_statuses": None}, "list of statuses"),
        ({"kind": "whatever", "target_statuses": ("closed",)}, "kind must be"),
    ],
)
def test_condition_rejects_bad_statuses(kwargs, match):
    with pytest.raises(PacklyValidationError, match=match):
        OrderCondition(**kwargs)


def test_a_single_status_string_is_one_status():
    assert OrderCondition("order_status", "closed").target_statuses == ("closed",)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (PacklyTransportError("boom"), True),
        (PacklyAPIError(http_status=503, method="GET", path="/v1/reseller/orders"), True),
        (PacklyAPIError(http_status=429, method="GET", path="/v1/reseller/orders"), True),
        (PacklyAPIError(http_status=401, method="GET", path="/v1/reseller/orders"), False),
        (PacklyAPIError(http_status=404, method="GET", path="/v1/reseller/orders"), False),
        (PacklyAPIError(http_status=400, method="GET", path="/v1/reseller/orders"), False),
        (PacklyAuthError("refused", http_status=401), False),
        (PacklyAuthError("down", http_status=502), True),
        (PacklyOrderNotFound("no such order"), False),
        (PacklyError("odd body"), False),
    ],
)
def test_transient_errors(error, transient):
    assert is_transient(error) is transient


def test_api_error_survives_the_trip_through_an_event():
    error = PacklyAPIError(
        http_status=404,
        method="GET",
        path="/v1/reseller/orders",
        code="NOT_FOUND",
        message="Nothing here",
        errors=[PacklyErrorItem("ORD_1", "page", "bad page")],
    )
    payload = error_to_payload(error)
    assert json.loads(json.dumps(payload)) == payload
    again = error_from_payload(payload)
    assert isinstance(again, PacklyAPIError)
    assert str(again) == str(error)
    assert (again.http_status, again.code, again.errors) == (404, "NOT_FOUND", error.errors)
    assert pickle.loads(pickle.dumps(again)).code == "NOT_FOUND"


def test_other_errors_keep_their_message():
    again = error_from_payload(error_to_payload(PacklyOrderNotFound("No Packly order 'X'")))
    assert isinstance(again, PacklyOrderNotFound) and str(again) == "No Packly order 'X'"
    assert "without details" in str(error_from_payload(None))


def test_deadline_is_absolute_utc_iso():
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    deadline = deadline_after(90, now=now)
    assert deadline == "2026-03-01T12:01:30+00:00"
    assert parse_deadline(deadline) == now + dt.timedelta(seconds=90)
    assert parse_deadline("2026-03-01T13:01:30+01:00") == now + dt.timedelta(seconds=90)
    with pytest.raises(PacklyValidationError, match="UTC offset"):
        parse_deadline("2026-03-01T12:00:00")
    with pytest.raises(PacklyValidationError, match="ISO-8601"):
        parse_deadline("tomorrow")


@pytest.mark.parametrize("status", EVENT_STATUSES)
def test_valid_events_pass(status):
    event = make_event(status, "text", order_id="O1")
    assert validate_event(event, required=("order_id",)) == event


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (None, "malformed event"),
        ("success", "malformed event"),
        ({"status": "done", "message": "x", "order_id": "O1"}, "unknown status 'done'"),
        ({"message": "x", "order_id": "O1"}, "unknown status None"),
        ({"status": "success", "order_id": "O1"}, "without message"),
        ({"status": "failed", "message": "x"}, "without order_id"),
    ],
)
def test_bad_events_are_refused(event, match):
    with pytest.raises(PacklyEventError, match=match):
        validate_event(event, required=("order_id",))


def test_make_event_refuses_unknown_status():
    with pytest.raises(ValueError):
        make_event("done", "x")


@pytest.mark.parametrize(
    ("value", "templated"),
    [
        ("{{ params.x }}", True),
        ("{% if x %}1{% endif %}", True),
        ("plain", False),
        (12, False),
        ([{"width": "{{ params.w }}"}], True),
        ({"a": [1, 2]}, False),
        (None, False),
    ],
)
def test_is_templated(value, templated):
    assert is_templated(value) is templated
