"""Sensors that wait for Packly: an order's status, its products' shipping, any GET endpoint.

``PacklyOrderStatusSensor`` and ``PacklyOrderProductsShippedSensor`` are one sensor with two
``OrderCondition`` rules (``triggers/rules.py``). The same rule decides in ``poke`` (on a
worker, sync hook) and in ``PacklyOrderStatusTrigger`` (on the triggerer, async hook), so the
two modes cannot drift.

``PacklySensor`` runs a Python ``response_check`` on the answer of a GET endpoint. A callable
cannot be sent to the triggerer, so when deferred, the trigger (``PacklyWaitTrigger``) only
waits until the next poke time and the worker pokes again on resume, deferring again while
the check is not satisfied. Unlike Airflow's ``HttpSensor`` (apache/airflow#40209), deferral
therefore honours ``response_check``; the check sees the same ``httpx.Response`` in both modes,
and no response body is stored in the metadata database.

Every poke, in poke mode and deferred (the first one, and the trigger's answer on resume),
runs inside Airflow's own ``BaseSensorOperator.execute`` loop, so ``soft_fail``,
``never_fail`` and ``silent_fail`` behave as for any Airflow sensor whatever the mode.

DAG-parse cost: this module imports only ``airflow.sdk`` and the provider's pure rules; the
hook and the triggers are imported when a sensor runs or defers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from airflow_provider_packly.arguments import (
    ArgumentCheck,
    check_callable,
    check_endpoint,
    check_page_size,
    literal,
    resolved_at_runtime,
)
from airflow_provider_packly.bases import PacklyTaskMixin
from airflow_provider_packly.exceptions import PacklyError
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.triggers.rules import (
    ConditionResult,
    OrderCondition,
    PacklyEventError,
    deadline_after,
    error_from_payload,
    is_transient,
    parse_deadline,
    seconds_until,
    validate_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["PacklyOrderProductsShippedSensor", "PacklyOrderStatusSensor", "PacklySensor"]

#: Added to the sensor's remaining time when deferring: Airflow's own trigger timeout is a
#: safety net for a lost triggerer; the trigger's ``timeout`` event (with its clearer message)
#: normally comes first.
DEFER_TIMEOUT_GRACE = dt.timedelta(seconds=60)
#: Shortest poll interval handed to a trigger.
MIN_POLL_INTERVAL = 0.1


def _check_order_id(order_id: Any) -> str:
    if not isinstance(order_id, str) or not order_id.strip():
        raise PacklyValidationError(f"order_id must be a non-empty string such as 'ORD-0001'; got {order_id!r}.")
    return order_id.strip()


class _PacklySensorBase(PacklyTaskMixin, BaseSensorOperator):
    """What the Packly sensors share: the connection, the hook, the argument checks, deferral.

    **Every poke goes through Airflow's own sensor loop** (``BaseSensorOperator.execute``), in
    every mode, so ``soft_fail``, ``never_fail``, ``silent_fail`` and the timeout mean exactly
    what they mean for any Airflow sensor. ``deferrable`` changes only how the sensor waits
    between two pokes: where that loop would sleep (``_get_next_poke_interval``), a deferrable
    sensor defers to its trigger instead (``_defer``), and on resume it enters the same loop
    again, with the trigger's answer as the next poke's result (``PacklyOrderStatusTrigger``)
    or with a real poke (``PacklyWaitTrigger``). Until a deadline fixed at the first deferral.
    """

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        #: The absolute deadline of a deferrable run (ISO-8601 UTC); set when it first pokes.
        self._deadline: str | None = None

    def execute(self, context: Context) -> Any:
        self.check_arguments()
        if self.deferrable:
            self._deadline = deadline_after(self.timeout)
        return super().execute(context)

    def _poke_loop(self, context: Context, deadline: str) -> Any:
        """Airflow's sensor loop again, on resume, keeping the deadline of the first deferral."""
        self._deadline = deadline
        return BaseSensorOperator.execute(self, context)

    def _get_next_poke_interval(self, started_at: Any, run_duration: Any, poke_count: int) -> float:
        """Airflow's sensor loop asks how long to sleep before the next poke: a deferrable sensor defers."""
        if not self.deferrable or self._deadline is None:
            return super()._get_next_poke_interval(started_at, run_duration, poke_count)
        if seconds_until(parse_deadline(self._deadline)) <= 0:
            raise AirflowSensorTimeout(self._timeout_message(self._deadline))
        self._defer(self._deadline)
        raise AssertionError("defer() returned instead of raising TaskDeferred")

    def _defer(self, deadline: str) -> None:
        """Hand the wait until the next poke to a trigger; raises ``TaskDeferred``."""
        raise NotImplementedError

    def _timeout_message(self, deadline: str) -> str:
        raise NotImplementedError

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's resume, except that a lost trigger gets one last poke before the timeout.

        When no trigger answered by the deferral's own timeout (the deadline plus
        ``DEFER_TIMEOUT_GRACE``: e.g. the triggerer was down that long), Airflow resumes the
        task only to fail it. The condition may have been met meanwhile, so poke once: success
        if it is, the usual timeout (or skip, with ``soft_fail``/``never_fail``) if not.
        """
        from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

        if (
            next_method == TRIGGER_FAIL_REPR
            and (next_kwargs or {}).get("error") == TriggerFailureReason.TRIGGER_TIMEOUT
        ):
            self.log.warning(
                "No trigger answered before the deferral timed out (was the triggerer down?); poking once more."
            )
            next_method, next_kwargs = "_resume_after_lost_trigger", {}
        return super().resume_execution(next_method, next_kwargs, context)

    def _resume_after_lost_trigger(self, context: Context) -> Any:
        return self._poke_loop(context, deadline_after(0))

    def _read_event(self, event: Any, required: tuple[str, ...]) -> dict[str, Any]:
        try:
            return validate_event(event, required=required)
        except PacklyEventError as exc:
            raise AirflowException(str(exc)) from exc

    def _defer_timeout(self, deadline: str) -> dt.timedelta:
        return dt.timedelta(seconds=max(0.0, seconds_until(parse_deadline(deadline)))) + DEFER_TIMEOUT_GRACE


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if value is None or not isinstance(value, Collection):
        raise PacklyValidationError(f"Statuses must be a list of strings; got {value!r}.")
    return list(value)


def _condition_of(kind: str, target_statuses: Any, failure_statuses: Any) -> OrderCondition:
    """The sensor's ``OrderCondition``: the one check of ``target_statuses`` and ``failure_statuses``."""
    target = _as_list(literal(target_statuses, "target_statuses"))
    failure = _as_list(literal(failure_statuses, "failure_statuses"))
    return OrderCondition(kind, tuple(target), tuple(failure))  # type: ignore[arg-type]


def _order_sensor_checks(kind: str) -> tuple[ArgumentCheck, ...]:
    """The argument rules of an order sensor waiting for a condition of this ``kind``."""
    return (
        ArgumentCheck(("order_id",), _check_order_id),
        ArgumentCheck(
            ("target_statuses", "failure_statuses"), lambda target, failure: _condition_of(kind, target, failure)
        ),
        ArgumentCheck(("page_size",), check_page_size),
    )


class _PacklyOrderConditionSensor(_PacklySensorBase):
    """Wait until an order meets an ``OrderCondition``; see the two public subclasses."""

    template_fields = ("order_id", "target_statuses", "failure_statuses", "page_size")
    ui_color = "#f2e6ff"
    #: What a subclass waits for: the ``OrderCondition`` kind and the statuses meaning success.
    condition_kind: str
    default_target_statuses: tuple[str, ...]

    def __init__(
        self,
        *,
        order_id: str,
        target_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] = ("canceled", "deleted"),
        page_size: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.order_id = order_id
        self.target_statuses = self.default_target_statuses if target_statuses is None else target_statuses
        self.failure_statuses = failure_statuses
        self.page_size = page_size
        #: A trigger's answer, used by the next poke instead of asking Packly (see ``poke``).
        self._trigger_event: dict[str, Any] | None = None
        self.check_arguments(parsing=True)
        if not (resolved_at_runtime(self.target_statuses) or resolved_at_runtime(self.failure_statuses)):
            condition = self.condition  # known now: keep the statuses normalised
            self.target_statuses, self.failure_statuses = condition.target_statuses, condition.failure_statuses

    @property
    def condition(self) -> OrderCondition:
        """The ``OrderCondition`` of the (rendered) ``target_statuses`` and ``failure_statuses``."""
        return _condition_of(self.condition_kind, self.target_statuses, self.failure_statuses)

    def _result_value(self, order_id: str, order_status: Any, product_statuses: Any) -> dict[str, Any]:
        return {"order_id": order_id, "order_status": order_status, "product_statuses": dict(product_statuses or {})}

    def check_order(self) -> ConditionResult | None:
        """Read the order once and evaluate the condition (``None``: a transient error, try again)."""
        order_id = _check_order_id(self.order_id)
        condition = self.condition
        with self.get_hook() as hook:
            try:
                order = hook.get_order(order_id, limit=check_page_size(self.page_size))
            except PacklyError as exc:
                if not is_transient(exc):
                    raise
                self.log.warning("Packly order %s: transient error, will poke again: %s", order_id, exc)
                return None
        result = condition.evaluate(order)
        self.log.info("%s", result.message)
        return result

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Look at the order once: done, not yet, or ``AirflowFailException`` on a failure status.

        Resumed from ``PacklyOrderStatusTrigger``, the trigger's answer is this poke's result
        (the trigger has just looked), so Airflow's sensor loop treats it like any other poke.
        """
        if self._trigger_event is not None:
            event, self._trigger_event = self._trigger_event, None
            return self._poke_result_from_event(event)
        result = self.check_order()
        if result is None or result.outcome == "waiting":
            return False
        if result.outcome == "failed":
            raise AirflowFailException(result.message)
        return PokeReturnValue(
            is_done=True,
            xcom_value=self._result_value(self.order_id, result.order_status, result.product_statuses),
        )

    def _poke_result_from_event(self, event: dict[str, Any]) -> PokeReturnValue:
        status = event["status"]
        message = str(event["message"])
        if status == "success":
            self.log.info("%s", message)
            return PokeReturnValue(
                is_done=True,
                xcom_value=self._result_value(
                    event["order_id"], event.get("order_status"), event.get("product_statuses")
                ),
            )
        if status == "failed":
            raise AirflowFailException(message)
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        raise error_from_payload(event.get("error") or {"message": message})

    def _defer(self, deadline: str) -> None:
        from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger

        condition = self.condition
        self.log.info(
            "Deferring: waiting on the triggerer for Packly order %s (%s) until %s.",
            self.order_id,
            condition.describe(),
            deadline,
        )
        self.defer(
            trigger=PacklyOrderStatusTrigger(
                order_id=_check_order_id(self.order_id),
                condition=condition.to_dict(),
                deadline=deadline,
                packly_conn_id=self.packly_conn_id,
                poll_interval=max(self.poke_interval, MIN_POLL_INTERVAL),
                page_size=check_page_size(self.page_size),
            ),
            method_name="execute_complete",
            timeout=self._defer_timeout(deadline),
        )

    def _timeout_message(self, deadline: str) -> str:
        return f"Packly order {self.order_id} did not meet the condition by the deadline {deadline}."

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after ``PacklyOrderStatusTrigger``: its answer is the next poke of Airflow's sensor loop.

        So ``success`` returns the result, ``failed`` and ``timeout`` fail (or skip, with
        ``soft_fail``/``never_fail``), and ``error`` raises the Packly error (skipped with
        ``never_fail``; with ``silent_fail`` logged, and the sensor defers again).
        """
        event = self._read_event(event, ("order_id",))
        self._trigger_event = event
        # An event without a deadline (an older trigger) cannot be waited on again.
        return self._poke_loop(context, str(event.get("deadline") or deadline_after(0)))


class PacklyOrderStatusSensor(_PacklyOrderConditionSensor):
    """Wait until a Packly order's status is one of ``target_statuses``.

    Fails at once (no retry: the order will not come back) when the status is one of
    ``failure_statuses``; times out after ``timeout`` seconds with ``AirflowSensorTimeout``.
    With ``deferrable=True`` the waiting happens on the triggerer
    (``PacklyOrderStatusTrigger``, polling every ``poke_interval`` seconds).

    Returns ``{"order_id", "order_status", "product_statuses"}``.

    :param order_id: The order (templated), e.g. ``"{{ params.order_id }}"``.
    :param target_statuses: Order statuses that mean success (default ``closed``) (templated).
    :param failure_statuses: Order statuses that mean failure (default ``canceled``, ``deleted``)
        (templated).
    :param packly_conn_id: The ``packly`` connection.
    :param page_size: ``limit`` when paging through ``/v1/reseller/orders`` (Packly documents
        no by-id endpoint) (templated).
    :param deferrable: Wait on the triggerer; default ``[operators] default_deferrable``.
    """

    condition_kind = "order_status"
    default_target_statuses = ("closed",)
    argument_checks = _order_sensor_checks(condition_kind)


class PacklyOrderProductsShippedSensor(_PacklyOrderConditionSensor):
    """Wait until every product of a Packly order is ``shipped`` (or another target status).

    Fails at once when the order's status or any product's status is one of
    ``failure_statuses`` (``canceled``, ``deleted``); an order listing no products keeps
    the sensor waiting. ``target_statuses`` defaults to ``shipped``. Otherwise as
    ``PacklyOrderStatusSensor``.
    """

    condition_kind = "products_status"
    default_target_statuses = ("shipped",)
    argument_checks = _order_sensor_checks(condition_kind)


class PacklySensor(_PacklySensorBase):
    """Poke a Packly GET endpoint until ``response_check`` says yes.

    ``response_check(response, **context)`` gets the ``httpx.Response`` (body already read) and
    the context keys its signature names (as in Airflow's ``HttpSensor``); it returns a bool or
    a ``PokeReturnValue``. Without it, any 2xx answer is success. Transient errors (network,
    408/429/5xx) count as "not yet"; other Packly errors (401 after a token refresh, 404,
    validation) fail the task. Only ``GET`` is sent: a sensor asks, it does not change state.

    With ``deferrable=True`` the sensor pokes once, then defers to ``PacklyWaitTrigger``, which
    only waits until the next poke time; on resume the worker pokes (and runs the check) again
    and defers again until the check passes or ``timeout`` (an absolute deadline fixed at the
    first deferral) is reached; resumed past the deadline (e.g. after a triggerer outage), it
    still pokes once more before timing out. A Python callable cannot run on the triggerer, and
    this keeps response bodies out of the metadata database; the cost is one short worker run
    per poke, as in ``mode="reschedule"``, so prefer a ``poke_interval`` of a minute or more.

    :param endpoint: Path under the connection's Base URL (templated).
    :param request_params: Query parameters (templated); not ``params``, which is every
        operator's own argument (the DAG/task params).
    :param headers: Extra headers (templated).
    :param response_check: The check; see above.
    :param packly_conn_id: The ``packly`` connection.
    :param deferrable: Wait on the triggerer; default ``[operators] default_deferrable``.
    """

    template_fields = ("endpoint", "request_params", "headers")
    argument_checks = (ArgumentCheck(("endpoint",), check_endpoint),)

    def __init__(
        self,
        *,
        endpoint: str,
        request_params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        response_check: Callable[..., bool | PokeReturnValue] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_callable("response_check", response_check)
        self.endpoint = endpoint
        self.request_params = request_params
        self.headers = headers
        self.response_check = response_check
        self.check_arguments(parsing=True)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        self.log.info("Poking Packly: GET %s", self.endpoint)
        with self.get_hook() as hook:
            try:
                response = hook.request("GET", self.endpoint, params=self.request_params, headers=self.headers)
            except PacklyError as exc:
                if not is_transient(exc):
                    raise
                self.log.warning("Transient error, will poke again: %s", exc)
                return False
        if self.response_check is None:
            return True
        result: bool | PokeReturnValue = self.call_with_context(self.response_check, response, context)
        return result

    def _defer(self, deadline: str) -> None:
        from airflow_provider_packly.triggers.packly import PacklyWaitTrigger

        trigger = PacklyWaitTrigger.after(self.poke_interval, deadline=deadline)
        self.log.info("Deferring until %s (deadline %s); the check runs again on resume.", trigger.wake_at, deadline)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=self._defer_timeout(deadline))

    def _timeout_message(self, deadline: str) -> str:
        return f"PacklySensor timed out: GET {self.endpoint} did not pass the check by {deadline}."

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after ``PacklyWaitTrigger``: poke again, then succeed, time out or defer again.

        A ``timeout`` event (the deadline had passed when the trigger started, e.g. after a
        triggerer outage) still gets this one last poke: the check may pass by now.
        """
        event = self._read_event(event, ("deadline",))
        if event["status"] not in ("success", "timeout"):
            raise AirflowException(
                f"PacklyWaitTrigger sent an unexpected {event['status']!r} event: {event['message']}"
            )
        deadline = str(event["deadline"])
        try:
            parse_deadline(deadline)
        except PacklyValidationError as exc:
            raise AirflowException(f"PacklyWaitTrigger sent an event with a bad deadline: {exc}") from exc
        return self._poke_loop(context, deadline)
