"""The Packly sensors: poke path, deferral, and the resume method's handling of trigger events."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_packly.exceptions import PacklyAPIError, PacklyError
from airflow_provider_packly.resources import PacklyOrderNotFound, PacklyValidationError
from airflow_provider_packly.sensors.packly import (
    DEFER_TIMEOUT_GRACE,
    PacklyOrderProductsShippedSensor,
    PacklyOrderStatusSensor,
    PacklySensor,
    _PacklySensorBase,
)
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger, PacklyWaitTrigger
from airflow_provider_packly.triggers.rules import error_to_payload, make_event, parse_deadline

from ..fakes import FakePackly, envelope, order, page


@pytest.fixture
def fake(mocker):
    packly = FakePackly(page())
    hooks = []

    def make(self):
        hooks.append(packly.hook())
        return hooks[-1]

    mocker.patch.object(_PacklySensorBase, "get_hook", make)
    yield packly
    for hook in hooks:
        assert hook._client is None  # closed


def context(**extra):
    return {"params": {"order_id": "ORD-0001"}, "ds": "2026-03-01", **extra}


def status_sensor(**kwargs) -> PacklyOrderStatusSensor:
    settings = {"task_id": "wait", "order_id": "ORD-0001", "poke_interval": 0.01, "timeout": 60}
    settings.update(kwargs)
    return PacklyOrderStatusSensor(**settings)


def utc_in(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)


# -- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_statuses": ["shipped"]}, "unknown status"),  # a product status, not an order status
        ({"failure_statuses": ["cancelled"]}, r"unknown status\(es\) 'cancelled'"),
        ({"target_statuses": ["closed"], "failure_statuses": ["closed"]}, "both a target and a failure"),
        ({"order_id": ""}, "order_id"),
        ({"page_size": 0}, "page_size"),
    ],
)
def test_order_sensor_checks_its_arguments_at_parse_time(kwargs, match):
    with pytest.raises(PacklyValidationError, match=match):
        status_sensor(**kwargs)


def test_products_sensor_uses_product_statuses():
    sensor = PacklyOrderProductsShippedSensor(task_id="s", order_id="ORD-1")
    assert sensor.target_statuses == ("shipped",) and sensor.failure_statuses == ("canceled", "deleted")
    with pytest.raises(PacklyValidationError, match=r"unknown status\(es\) 'closed'"):
        PacklyOrderProductsShippedSensor(task_id="s", order_id="ORD-1", target_statuses=["closed"])


def test_templated_order_id_is_checked_at_run_time(fake):
    sensor = status_sensor(order_id="{{ params.order_id }}")
    sensor.render_template_fields(context(params={"order_id": " "}))
    with pytest.raises(PacklyValidationError, match="order_id"):
        sensor.poke(context())
    assert fake.calls == []


def test_deferrable_defaults_to_the_airflow_setting():
    assert status_sensor().deferrable is False  # [operators] default_deferrable is False here
    assert status_sensor(deferrable=True).deferrable is True


# -- poke path --------------------------------------------------------------------------------------


def test_poke_waits_then_succeeds_with_plain_data(fake):
    fake.answers = [page(order("ORD-0001", "paid")), page(order("ORD-0001", "closed", ["shipped"]))]
    sensor = status_sensor()
    assert sensor.poke(context()) is False
    result = sensor.poke(context())
    assert isinstance(result, PokeReturnValue) and result.is_done
    assert result.xcom_value == {
        "order_id": "ORD-0001",
        "order_status": "closed",
        "product_statuses": {"ORD-0001-P1": "shipped"},
    }


def test_poke_mode_execute_returns_the_result(fake):
    fake.answers = [page(order("ORD-0001", "pending_payment")), page(order("ORD-0001", "closed"))]
    assert status_sensor().execute(context())["order_status"] == "closed"
    assert fake.api_methods == {"GET"}


def test_poke_fails_fast_on_a_failure_status(fake):
    fake.answers = [page(order("ORD-0001", "canceled"))]
    with pytest.raises(AirflowFailException, match="'canceled', a failure status"):
        status_sensor().execute(context())
    assert len(fake.calls) == 1


def test_poke_soft_fail_skips(fake):
    fake.answers = [page(order("ORD-0001", "deleted"))]
    with pytest.raises(AirflowSkipException):
        status_sensor(soft_fail=True).execute(context())


def test_poke_times_out_with_a_clear_message(fake):
    fake.answers = [page(order("ORD-0001", "paid"))]
    with pytest.raises(AirflowSensorTimeout, match="timed out"):
        status_sensor(timeout=0.05, poke_interval=0.01).execute(context())


def test_poke_continues_through_transient_errors_and_fails_on_permanent_ones(fake):
    fake.answers = [envelope(503, "INTERNAL_SERVER_ERROR", "busy"), page(order("ORD-0001", "closed"))]
    sensor = status_sensor()
    assert sensor.poke(context()) is False
    assert sensor.poke(context())
    fake.answers = [envelope(401, "UNAUTHORIZED", "nope")]
    with pytest.raises(PacklyAPIError, match="HTTP 401"):
        sensor.poke(context())


def test_unknown_order_fails(fake):
    fake.answers = [page(order("ORD-0009", "closed"))]
    with pytest.raises(PacklyOrderNotFound, match="ORD-0001"):
        status_sensor().poke(context())


def test_products_sensor_pokes_the_same_rule(fake):
    fake.answers = [
        page(order("ORD-0001", "in_processing", ["shipped", "in_processing"])),
        page(order("ORD-0001", "in_processing", ["shipped", "canceled"])),
    ]
    sensor = PacklyOrderProductsShippedSensor(task_id="s", order_id="ORD-0001")
    assert sensor.poke(context()) is False
    with pytest.raises(AirflowFailException, match="ORD-0001-P2 is 'canceled'"):
        sensor.poke(context())


# -- deferral -------------------------------------------------------------------------------------


def test_deferrable_sensor_pokes_once_then_defers_with_an_absolute_deadline(fake):
    fake.answers = [page(order("ORD-0001", "paid"))]
    sensor = status_sensor(deferrable=True, timeout=120, poke_interval=2, page_size=10)
    before = utc_in(120)
    with pytest.raises(TaskDeferred) as caught:
        sensor.execute(context())
    after = utc_in(120)
    deferred = caught.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, PacklyOrderStatusTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["order_id"] == "ORD-0001" and kwargs["poll_interval"] == 2 and kwargs["page_size"] == 10
    assert kwargs["condition"] == {
        "kind": "order_status",
        "target_statuses": ["closed"],
        "failure_statuses": ["canceled", "deleted"],
    }
    assert before <= parse_deadline(kwargs["deadline"]) <= after
    assert deferred.timeout is not None and deferred.timeout > DEFER_TIMEOUT_GRACE
    assert len(fake.calls) == 1


def test_deferrable_sensor_does_not_defer_when_already_done(fake):
    fake.answers = [page(order("ORD-0001", "closed"))]
    assert status_sensor(deferrable=True).execute(context())["order_status"] == "closed"


def test_deferrable_sensor_fails_fast_before_deferring(fake):
    fake.answers = [page(order("ORD-0001", "canceled"))]
    with pytest.raises(AirflowFailException):
        status_sensor(deferrable=True).execute(context())
    with pytest.raises(AirflowSkipException):
        status_sensor(deferrable=True, soft_fail=True).execute(context())


def test_products_sensor_defers_to_the_same_trigger_class(fake):
    fake.answers = [page(order("ORD-0001", "paid", ["pending"]))]
    with pytest.raises(TaskDeferred) as caught:
        PacklyOrderProductsShippedSensor(task_id="s", order_id="ORD-0001", deferrable=True).execute(context())
    assert type(caught.value.trigger) is PacklyOrderStatusTrigger
    assert caught.value.trigger.condition["kind"] == "products_status"


# -- resume: each event status, and events that cannot be trusted ---------------------------------


def event(status, message="msg", **data):
    return make_event(status, message, order_id="ORD-0001", order_status="closed", product_statuses={}, **data)


def test_resume_success_returns_plain_data():
    assert status_sensor().execute_complete(context(), event=event("success")) == {
        "order_id": "ORD-0001",
        "order_status": "closed",
        "product_statuses": {},
    }


def test_resume_failed_fails_without_retry():
    with pytest.raises(AirflowFailException, match="order was canceled"):
        status_sensor().execute_complete(context(), event=event("failed", "order was canceled"))


def test_resume_timeout_is_a_sensor_timeout():
    with pytest.raises(AirflowSensorTimeout, match="did not meet"):
        status_sensor().execute_complete(context(), event=event("timeout", "ORD-0001 did not meet the condition"))


def test_resume_error_raises_the_packly_error():
    error = PacklyAPIError(http_status=404, method="GET", path="/v1/reseller/orders", code="NOT_FOUND", message="gone")
    with pytest.raises(PacklyAPIError) as caught:
        status_sensor().execute_complete(context(), event=event("error", str(error), error=error_to_payload(error)))
    assert str(caught.value) == str(error) and caught.value.code == "NOT_FOUND"
    with pytest.raises(PacklyError, match="something odd"):
        status_sensor().execute_complete(context(), event=event("error", "something odd"))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (None, "malformed event"),
        (["success"], "malformed event"),
        ({"status": "done", "message": "x", "order_id": "ORD-0001"}, "unknown status 'done'"),
        ({"status": "success", "order_id": "ORD-0001"}, "without message"),
        ({"status": "success", "message": "x"}, "without order_id"),
    ],
)
def test_resume_refuses_malformed_events(bad, match):
    with pytest.raises(AirflowException, match=match):
        status_sensor().execute_complete(context(), event=bad)


def test_resume_soft_fail_goes_through_airflow_resume_execution():
    sensor = status_sensor(soft_fail=True)
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": event("timeout")}, context())


# -- PacklySensor ------------------------------------------------------------------------------------


def ready(response, params):
    """A response_check that uses the context, as with HttpSensor."""
    return any(o["status"] == params["want"] for o in response.json()["response"])


def generic(**kwargs) -> PacklySensor:
    settings = {
        "task_id": "g",
        "endpoint": "/v1/reseller/orders",
        "request_params": {"limit": 5},
        "response_check": ready,
        "poke_interval": 1,
        "timeout": 60,
    }
    settings.update(kwargs)
    return PacklySensor(**settings)


def test_generic_sensor_poke_runs_the_check_with_context(fake):
    fake.answers = [page(order("A", "paid")), page(order("A", "closed"))]
    sensor = generic()
    assert sensor.poke(context(params={"want": "closed"})) is False
    assert sensor.poke(context(params={"want": "closed"})) is True
    assert fake.calls[0] == ("GET", "/v1/reseller/orders", {"limit": "5"})


def test_generic_sensor_without_check_succeeds_on_2xx(fake):
    fake.answers = [envelope(502, "INTERNAL_SERVER_ERROR", "proxy"), page()]
    sensor = generic(response_check=None)
    assert sensor.poke(context()) is False
    assert sensor.poke(context()) is True


def test_generic_sensor_defers_and_honours_the_check_on_resume(fake):
    fake.answers = [page(order("A", "paid"))]
    sensor = generic(deferrable=True, poke_interval=30, timeout=600)
    ctx = context(params={"want": "closed"})
    with pytest.raises(TaskDeferred) as caught:
        sensor.execute(ctx)
    trigger = caught.value.trigger
    assert isinstance(trigger, PacklyWaitTrigger)
    deadline = trigger.deadline
    assert parse_deadline(trigger.wake_at) < parse_deadline(deadline)

    # Resumed while the check still says no: defer again, same deadline.
    fake.answers = [page(order("A", "paid"))]
    with pytest.raises(TaskDeferred) as again:
        sensor.execute_complete(ctx, event=make_event("success", "poke", deadline=deadline))
    assert again.value.trigger.deadline == deadline

    # Resumed when the check says yes: done.
    fake.answers = [page(order("A", "closed"))]
    assert sensor.execute_complete(ctx, event=make_event("success", "poke", deadline=deadline)) is None
    assert len(fake.calls) == 3


def test_generic_sensor_returns_poke_return_value(fake):
    fake.answers = [page(order("A", "closed"))]
    sensor = generic(
        deferrable=True, response_check=lambda response: PokeReturnValue(True, {"n": len(response.json()["response"])})
    )
    assert sensor.execute(context()) == {"n": 1}


def test_generic_sensor_times_out_at_its_deadline(fake):
    fake.answers = [page(order("A", "paid"))]
    sensor = generic(deferrable=True)
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
    ctx = context(params={"want": "closed"})
    with pytest.raises(AirflowSensorTimeout, match="did not pass the check"):
        sensor.execute_complete(ctx, event=make_event("success", "poke", deadline=past))
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(ctx, event=make_event("timeout", "late", deadline=past))
    with pytest.raises(AirflowException, match="without deadline"):
        sensor.execute_complete(ctx, event=make_event("success", "poke"))


def test_generic_sensor_check_raising_fails_the_task(fake):
    fake.answers = [page()]

    def broken(response):
        raise ValueError("check exploded")

    with pytest.raises(ValueError, match="check exploded"):
        generic(response_check=broken).poke(context())


def test_generic_sensor_refuses_a_non_callable_check():
    with pytest.raises(PacklyValidationError, match="callable"):
        generic(response_check="yes")


def test_generic_sensor_sends_get_only(fake):
    fake.answers = [httpx.Response(200, json={})]
    generic(response_check=None).poke(context())
    assert fake.api_methods == {"GET"}
