"""The argument rules and the base that the Packly operators and sensors share (one home each)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
import pytest

from airflow_provider_packly.arguments import check_callable, check_endpoint, check_page_size, literal, parse_time
from airflow_provider_packly.bases import PacklyTaskMixin
from airflow_provider_packly.operators.packly import (
    PacklyDielineOperator,
    PacklyOperator,
    PacklyOrdersOperator,
    PacklyQuotationOperator,
)
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.sensors.packly import (
    PacklyOrderProductsShippedSensor,
    PacklyOrderStatusSensor,
    PacklySensor,
)

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-06", dt.datetime(2026, 1, 6, tzinfo=UTC)),  # what {{ ds }} renders
        ("2026-01-06T09:30:00", dt.datetime(2026, 1, 6, 9, 30, tzinfo=UTC)),  # naive text means UTC
        (" 2026-01-06T09:30:00Z ", dt.datetime(2026, 1, 6, 9, 30, tzinfo=UTC)),
        ("2026-01-06T10:30:00+01:00", dt.datetime(2026, 1, 6, 9, 30, tzinfo=UTC)),
        (dt.datetime(2026, 1, 6, 9, 30), dt.datetime(2026, 1, 6, 9, 30, tzinfo=UTC)),  # naive datetime means UTC
        (pendulum.datetime(2026, 1, 6, 10, 30, tz="Europe/Berlin"), dt.datetime(2026, 1, 6, 9, 30, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_parse_time_reads_iso_text_and_datetimes_as_utc(value: Any, expected: dt.datetime | None) -> None:
    parsed = parse_time(value, "since")
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("last tuesday", "since must be an ISO-8601 timestamp; got 'last tuesday'"),
        ("10:00", "since must be an ISO-8601 timestamp; got '10:00'"),  # a time without a date is not guessed
        ("P1D", "since must be an ISO-8601 timestamp; got 'P1D'"),  # a duration is not a timestamp
        (1767657600, "since must be a datetime or an ISO-8601 timestamp; got 1767657600"),
    ],
)
def test_parse_time_refuses_what_is_not_a_timestamp(value: Any, match: str) -> None:
    with pytest.raises(PacklyValidationError, match=match):
        parse_time(value, "since")


def test_page_size_rule_reads_a_rendered_number_and_names_the_argument() -> None:
    assert check_page_size("25") == 25
    assert check_page_size(7) == 7
    for bad in (0, -1, True, "ten", 2.5):
        with pytest.raises(PacklyValidationError, match="page_size must be a positive whole number"):
            check_page_size(bad)
    with pytest.raises(PacklyValidationError, match="limit must be a positive whole number; got 0"):
        check_page_size("0", name="limit")


def test_endpoint_callable_and_literal_rules() -> None:
    assert check_endpoint("/v1/reseller/orders") == "/v1/reseller/orders"
    with pytest.raises(PacklyValidationError, match="endpoint must be a path"):
        check_endpoint(" ")
    check_callable("response_check", None)
    check_callable("response_check", len)
    with pytest.raises(PacklyValidationError, match="response_filter must be a callable"):
        check_callable("response_filter", "not callable")
    assert literal("['closed', 'shipped']", "statuses") == ["closed", "shipped"]
    assert literal('{"a": 1}', "items") == {"a": 1}
    assert literal("closed", "statuses") == "closed"
    with pytest.raises(PacklyValidationError, match="neither JSON nor a Python literal"):
        literal("[closed", "statuses")


@pytest.mark.parametrize(
    "cls",
    [
        PacklyOperator,
        PacklyDielineOperator,
        PacklyQuotationOperator,
        PacklyOrdersOperator,
        PacklyOrderStatusSensor,
        PacklyOrderProductsShippedSensor,
        PacklySensor,
    ],
)
def test_every_operator_and_sensor_takes_connection_and_hook_from_the_one_base(cls: type) -> None:
    assert issubclass(cls, PacklyTaskMixin)
    assert cls.get_hook is PacklyTaskMixin.get_hook
    assert cls.call_with_context is PacklyTaskMixin.call_with_context
