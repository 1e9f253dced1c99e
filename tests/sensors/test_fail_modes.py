"""soft_fail, never_fail and silent_fail mean the same in poke mode and deferrable mode (issue 8, item 4).

Airflow's own sensor loop (``BaseSensorOperator.execute``) decides what each flag does with
an error; a deferrable Packly sensor must not decide differently, neither on its first poke
(before deferring) nor when its trigger reports back. Each case runs the same sensor in poke
mode, deferrable on its first poke, and deferrable resumed by the trigger's event, and expects
one outcome for all three.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

from airflow_provider_packly.exceptions import PacklyAPIError
from airflow_provider_packly.sensors.packly import PacklyOrderStatusSensor, PacklySensor, _PacklySensorBase
from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after, error_to_payload, make_event

from ..fakes import FakePackly, envelope, order, page

NOT_FOUND = envelope(404, "NOT_FOUND", "No such resource")
CANCELED = page(order("ORD-0001", "canceled"))
FLAGS = {"none": {}, "soft_fail": {"soft_fail": True}, "never_fail": {"never_fail": True}}


@pytest.fixture
def fake(mocker):
    packly = FakePackly(page())
    mocker.patch.object(_PacklySensorBase, "get_hook", lambda self: packly.hook())
    return packly


def context() -> dict[str, Any]:
    return {"params": {}, "ds": "2026-03-01"}


def outcome(run: Callable[[], Any]) -> str:
    """What happened to the task: success, skipped, deferred, or the exception's class name."""
    try:
        run()
    except AirflowSkipException:
        return "skipped"
    except TaskDeferred:
        return "deferred"
    except Exception as exc:
        return type(exc).__name__
    return "success"


def order_sensor(**kwargs: Any) -> PacklyOrderStatusSensor:
    return PacklyOrderStatusSensor(task_id="wait", order_id="ORD-0001", poke_interval=0.01, timeout=2, **kwargs)


def trigger_event(answer) -> dict[str, Any]:
    """The event PacklyOrderStatusTrigger sends for this answer from Packly."""
    condition = OrderCondition("order_status", ("closed",), ("canceled", "deleted"))
    common = {"order_id": "ORD-0001", "condition": condition.to_dict(), "deadline": deadline_after(60)}
    if answer is NOT_FOUND:
        error = PacklyAPIError(
            http_status=404, method="GET", path="/v1/reseller/orders", code="NOT_FOUND", message="No such resource"
        )
        return make_event(
            "error", str(error), order_status=None, product_statuses={}, error=error_to_payload(error), **common
        )
    result = condition.evaluate(order("ORD-0001", "canceled"))
    return make_event("failed", result.message, order_status="canceled", product_statuses={}, **common)


EXPECTED = {
    # A 404 is an error of the poke: never_fail skips it; soft_fail covers only sensor failures.
    ("404", "none"): "PacklyAPIError",
    ("404", "soft_fail"): "PacklyAPIError",
    ("404", "never_fail"): "skipped",
    # A failure status fails the sensor: soft_fail and never_fail both skip it.
    ("failure status", "none"): "AirflowFailException",
    ("failure status", "soft_fail"): "skipped",
    ("failure status", "never_fail"): "skipped",
}


@pytest.mark.parametrize(("situation", "flag"), list(EXPECTED), ids=[f"{s}-{f}" for s, f in EXPECTED])
def test_order_sensor_flags_mean_the_same_in_every_mode(fake, situation, flag):
    answer = NOT_FOUND if situation == "404" else CANCELED
    fake.answers = [answer]
    poke_mode = outcome(lambda: order_sensor(**FLAGS[flag]).execute(context()))
    first_poke = outcome(lambda: order_sensor(deferrable=True, **FLAGS[flag]).execute(context()))
    resumed = outcome(
        lambda: order_sensor(deferrable=True, **FLAGS[flag]).resume_execution(
            "execute_complete", {"event": trigger_event(answer)}, context()
        )
    )
    assert (poke_mode, first_poke, resumed) == (EXPECTED[(situation, flag)],) * 3


@pytest.mark.parametrize("flag", list(FLAGS))
def test_generic_sensor_flags_mean_the_same_in_every_mode(fake, flag):
    fake.answers = [NOT_FOUND]

    def sensor(**kwargs: Any) -> PacklySensor:
        return PacklySensor(
            task_id="g", endpoint="/v1/reseller/orders", poke_interval=0.01, timeout=0.2, **FLAGS[flag], **kwargs
        )

    poke_mode = outcome(lambda: sensor().execute(context()))
    first_poke = outcome(lambda: sensor(deferrable=True).execute(context()))
    resumed = outcome(
        lambda: sensor(deferrable=True).resume_execution(
            "execute_complete", {"event": make_event("success", "poke", deadline=deadline_after(60))}, context()
        )
    )
    assert (poke_mode, first_poke, resumed) == (EXPECTED[("404", flag)],) * 3


def test_silent_fail_keeps_waiting_in_every_mode(fake):
    """silent_fail logs a poke's error and pokes again: poke mode until its timeout, deferrable by deferring."""
    fake.answers = [NOT_FOUND]
    assert outcome(lambda: order_sensor(silent_fail=True).execute(context())) == "AirflowSensorTimeout"
    assert len(fake.calls) > 1  # it did poke again
    assert outcome(lambda: order_sensor(deferrable=True, silent_fail=True).execute(context())) == "deferred"
    resumed = order_sensor(deferrable=True, silent_fail=True)
    event = trigger_event(NOT_FOUND)
    with pytest.raises(TaskDeferred) as again:
        resumed.resume_execution("execute_complete", {"event": event}, context())
    assert again.value.trigger.deadline == event["deadline"]  # waits on with the same deadline
