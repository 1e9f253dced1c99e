"""After a triggerer outage longer than the deadline, look once before timing out (issue 8, item 8).

A trigger re-created past its deadline (the triggerer was down) must poll Packly once and
report what it sees: an order that closed while nobody was looking is a success, not a
timeout. The sensors do the same on resume: ``PacklySensor`` pokes once more on a
``timeout`` event, and a deferral that Airflow itself timed out (no triggerer at all) gets
one last poke before ``AirflowSensorTimeout``.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from airflow_provider_packly.sensors.packly import PacklyOrderStatusSensor, PacklySensor, _PacklySensorBase
from airflow_provider_packly.triggers.rules import OrderCondition, make_event

from ..fakes import FakePackly, envelope, order, page, sandbox_connection_json
from .test_triggers import collect, order_trigger, recreate, use_fake


def past(seconds: float = 5) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "event", "message"),
    [
        ("closed", "success", "reached status 'closed'"),
        ("canceled", "failed", "a failure status"),
        ("paid", "timeout", "Last status seen: 'paid'"),
    ],
)
async def test_a_trigger_recreated_past_its_deadline_looks_once(mocker, status, event, message):
    fake = FakePackly(page(order("ORD-0001", status)))
    use_fake(mocker, fake)
    deadline = past()
    events = await collect(recreate(order_trigger(deadline=deadline)))
    assert [e["status"] for e in events] == [event]
    assert events[0]["order_status"] == status
    assert message in events[0]["message"]
    assert events[0]["deadline"] == deadline  # the original deadline, for the sensor
    assert len(fake.calls) == 1  # one look, not a new wait


@pytest.mark.anyio
async def test_past_the_deadline_a_transient_error_is_a_timeout_that_says_so(mocker):
    fake = FakePackly(envelope(503, "INTERNAL_SERVER_ERROR", "busy"))
    use_fake(mocker, fake)
    events = await collect(order_trigger(deadline=past()))
    assert [e["status"] for e in events] == ["timeout"]
    assert "could not be read" in events[0]["message"]
    assert len(fake.calls) == 1


@pytest.mark.anyio
async def test_the_last_look_is_at_the_deadline(mocker):
    """An order that closes between the last regular poll and the deadline is seen."""
    answers = iter([page(order("ORD-0001", "paid")), page(order("ORD-0001", "closed"))])
    fake = FakePackly(lambda request: next(answers))
    use_fake(mocker, fake)
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)).isoformat()
    events = await collect(order_trigger(deadline=soon, poll_interval=3600))  # no regular poll before it
    assert [e["status"] for e in events] == ["success"]
    assert len(fake.calls) == 2


@pytest.mark.anyio
async def test_a_poll_answered_before_the_deadline_but_done_after_it_is_followed_by_the_last_look(mocker):
    """Under load a regular poll can be answered just before the deadline and finish after it;
    that answer is older than the deadline, so the last look is still taken. (A CI run on a
    loaded machine timed out here with the order already closed.)"""
    answers = iter([page(order("ORD-0001", "paid")), page(order("ORD-0001", "closed"))])
    fake = FakePackly(lambda request: next(answers))
    use_fake(mocker, fake)
    deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    evaluate = OrderCondition.evaluate

    def slow_first_look(condition: OrderCondition, found: dict) -> object:
        if found["status"] == "paid":  # the poll's own work runs past the deadline
            time.sleep(max(0.0, (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.05)
        return evaluate(condition, found)

    mocker.patch.object(OrderCondition, "evaluate", autospec=True, side_effect=slow_first_look)
    events = await collect(order_trigger(deadline=deadline.isoformat(), poll_interval=3600))
    assert [e["status"] for e in events] == ["success"]
    assert len(fake.calls) == 2


@pytest.mark.integration
@pytest.mark.anyio
async def test_recreated_past_its_deadline_against_the_sandbox(monkeypatch):
    # ORD-0002 is deleted from the start: past the deadline the trigger still says so.
    with run_sandbox(SandboxConfig()) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_PACKLY_OUTAGE", sandbox_connection_json(sandbox.base_url))
        trigger = order_trigger(order_id="ORD-0002", packly_conn_id="packly_outage", deadline=past(3600))
        events = await collect(recreate(trigger))
        await PacklyHook.aclose_shared_clients()
        assert [(e["status"], e["order_status"]) for e in events] == [("failed", "deleted")]
        assert sandbox.state.api_requests["/v1/reseller/orders"] >= 1
        json.dumps(events)


# -- the sensors on resume ------------------------------------------------------------------------------


@pytest.fixture
def fake(mocker):
    packly = FakePackly(page())
    mocker.patch.object(_PacklySensorBase, "get_hook", lambda self: packly.hook())
    return packly


def context() -> dict:
    return {"params": {}, "ds": "2026-03-01"}


def generic(**kwargs) -> PacklySensor:
    return PacklySensor(
        task_id="g",
        endpoint="/v1/reseller/orders",
        deferrable=True,
        poke_interval=30,
        timeout=600,
        response_check=lambda response: bool(response.json()["response"]),
        **kwargs,
    )


def test_generic_sensor_pokes_once_more_on_a_timeout_event(fake):
    fake.answers = [page(order("A", "closed"))]
    sensor = generic()
    assert (
        sensor.resume_execution(
            "execute_complete", {"event": make_event("timeout", "late", deadline=past())}, context()
        )
        is None
    )
    assert len(fake.calls) == 1

    fake.answers = [page()]
    with pytest.raises(AirflowSensorTimeout, match="did not pass the check"):
        generic().execute_complete(context(), event=make_event("timeout", "late", deadline=past()))
    with pytest.raises(AirflowSkipException):
        generic(soft_fail=True).resume_execution(
            "execute_complete", {"event": make_event("timeout", "late", deadline=past())}, context()
        )


@pytest.mark.parametrize("sensor_class", ["order", "generic"])
def test_a_deferral_airflow_timed_out_gets_one_last_poke(fake, sensor_class):
    """No triggerer answered before Airflow's own trigger timeout: poke once, then decide."""

    def sensor(**kwargs):
        if sensor_class == "generic":
            return generic(**kwargs)
        return PacklyOrderStatusSensor(task_id="wait", order_id="ORD-0001", deferrable=True, timeout=600, **kwargs)

    lost = {"error": TriggerFailureReason.TRIGGER_TIMEOUT}
    fake.answers = [page(order("ORD-0001", "closed"))]
    result = sensor().resume_execution(TRIGGER_FAIL_REPR, lost, context())
    assert len(fake.calls) == 1
    if sensor_class == "order":
        assert result["order_status"] == "closed"

    fake.answers = [page(order("ORD-0001", "paid")) if sensor_class == "order" else page()]
    with pytest.raises(AirflowSensorTimeout):
        sensor().resume_execution(TRIGGER_FAIL_REPR, lost, context())
    with pytest.raises(AirflowSkipException):
        sensor(soft_fail=True).resume_execution(TRIGGER_FAIL_REPR, lost, context())
