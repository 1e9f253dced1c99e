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

DAG-parse cost: this module imports only ``airflow.sdk`` and the provider's pure rules; the
hook and the triggers are imported when a sensor runs or defers.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
)

from airflow_provider_packly.exceptions import PacklyError
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.triggers.rules import (
    ConditionResult,
    OrderCondition,
    PacklyEventError,
    deadline_after,
    error_from_payload,
    is_templated,
    is_transient,
    parse_deadline,
    seconds_until,
    validate_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_packly.hooks.packly import PacklyHook

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


class _PacklySensorBase(BaseSensorOperator):
    """What the Packly sensors share: the connection, the hook, deferral and failure handling."""

    def __init__(
        self,
        *,
        packly_conn_id: str = "packly_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.packly_conn_id = packly_conn_id
        self.deferrable = deferrable

    def get_hook(self) -> PacklyHook:
        """A new hook; callers close it (``with self.get_hook() as hook``)."""
        from airflow_provider_packly.hooks.packly import PacklyHook

        return PacklyHook(packly_conn_id=self.packly_conn_id)

    def _first_poke(self, context: Context) -> bool | PokeReturnValue:
        """``poke`` once before deferring, with the soft_fail/never_fail rules of poke mode."""
        try:
            return self.poke(context)
        except (AirflowFailException, AirflowSensorTimeout) as exc:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(f"Skipping ({'soft_fail' if self.soft_fail else 'never_fail'} is set): {exc}") from exc
            raise

    def _read_event(self, event: Any, required: tuple[str, ...]) -> dict[str, Any]:
        try:
            return validate_event(event, required=required)
        except PacklyEventError as exc:
            raise AirflowException(str(exc)) from exc

    def _defer_timeout(self, deadline: str) -> dt.timedelta:
        return dt.timedelta(seconds=max(0.0, seconds_until(parse_deadline(deadline)))) + DEFER_TIMEOUT_GRACE


class _PacklyOrderConditionSensor(_PacklySensorBase):
    """Wait until an order meets an ``OrderCondition``; see the two public subclasses."""

    template_fields = ("order_id",)
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
        if not is_templated(order_id):
            _check_order_id(order_id)
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
            raise PacklyValidationError(f"page_size must be a positive whole number; got {page_size!r}.")
        condition = OrderCondition(
            self.condition_kind,
            tuple(_as_list(self.default_target_statuses if target_statuses is None else target_statuses)),
            tuple(_as_list(failure_statuses)),
        )
        self.order_id = order_id
        self.condition = condition
        self.target_statuses = condition.target_statuses
        self.failure_statuses = condition.failure_statuses
        self.page_size = page_size

    def _result_value(self, order_id: str, order_status: Any, product_statuses: Any) -> dict[str, Any]:
        return {"order_id": order_id, "order_status": order_status, "product_statuses": dict(product_statuses or {})}

    def check_order(self) -> ConditionResult | None:
        """Read the order once and evaluate the condition (``None``: a transient error, try again)."""
        order_id = _check_order_id(self.order_id)
        with self.get_hook() as hook:
            try:
                order = hook.get_order(order_id, limit=self.page_size)
            except PacklyError as exc:
                if not is_transient(exc):
                    raise
                self.log.warning("Packly order %s: transient error, will poke again: %s", order_id, exc)
                return None
        result = self.condition.evaluate(order)
        self.log.info("%s", result.message)
        return result

    def poke(self, context: Context) -> bool | PokeReturnValue:
        result = self.check_order()
        if result is None or result.outcome == "waiting":
            return False
        if result.outcome == "failed":
            raise AirflowFailException(result.message)
        return PokeReturnValue(
            is_done=True,
            xcom_value=self._result_value(self.order_id, result.order_status, result.product_statuses),
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self._first_poke(context)
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger

        deadline = deadline_after(self.timeout)
        self.log.info(
            "Deferring: waiting on the triggerer for Packly order %s (%s) until %s.",
            self.order_id, self.condition.describe(), deadline,
        )
        self.defer(
            trigger=PacklyOrderStatusTrigger(
                order_id=_check_order_id(self.order_id),
                condition=self.condition.to_dict(),
                deadline=deadline,
                packly_conn_id=self.packly_conn_id,
                poll_interval=max(self.poke_interval, MIN_POLL_INTERVAL),
                page_size=self.page_size,
            ),
            method_name="execute_complete",
            timeout=self._defer_timeout(deadline),
        )

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after ``PacklyOrderStatusTrigger``: succeed, fail, time out or raise its error."""
        event = self._read_event(event, ("order_id",))
        status = event["status"]
        message = str(event["message"])
        if status == "success":
            self.log.info("%s", message)
            return self._result_value(event["order_id"], event.get("order_status"), event.get("product_statuses"))
        if status == "failed":
            raise AirflowFailException(message)
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        raise error_from_payload(event.get("error") or {"message": message})


class PacklyOrderStatusSensor(_PacklyOrderConditionSensor):
    """Wait until a Packly order's status is one of ``target_statuses``.

    Fails at once (no retry: the order will not come back) when the status is one of
    ``failure_statuses``; times out after ``timeout`` seconds with ``AirflowSensorTimeout``.
    With ``deferrable=True`` the waiting happens on the triggerer
    (``PacklyOrderStatusTrigger``, polling every ``poke_interval`` seconds).

    Returns ``{"order_id", "order_status", "product_statuses"}``.

    :param order_id: The order (templated), e.g. ``"{{ params.order_id }}"``.
    :param target_statuses: Order statuses that mean success (default ``closed``).
    :param failure_statuses: Order statuses that mean failure (default ``canceled``, ``deleted``).
    :param packly_conn_id: The ``packly`` connection.
    :param page_size: ``limit`` when paging through ``/v1/reseller/orders`` (Packly documents
        no by-id endpoint).
    :param deferrable: Wait on the triggerer; default ``[operators] default_deferrable``.
    """

    condition_kind = "order_status"
    default_target_statuses = ("closed",)


class PacklyOrderProductsShippedSensor(_PacklyOrderConditionSensor):
    """Wait until every product of a Packly order is ``shipped`` (or another target status).

    Fails at once when the order's status or any product's status is one of
    ``failure_statuses`` (``canceled``, ``deleted``); an order listing no products keeps
    the sensor waiting. ``target_statuses`` defaults to ``shipped``. Otherwise as
    ``PacklyOrderStatusSensor``.
    """

    condition_kind = "products_status"
    default_target_statuses = ("shipped",)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if value is None or not isinstance(value, Collection):
        raise PacklyValidationError(f"Statuses must be a list of strings; got {value!r}.")
    return list(value)


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
    first deferral) is reached. A Python callable cannot run on the triggerer, and this keeps
    response bodies out of the metadata database; the cost is one short worker run per poke,
    as in ``mode="reschedule"``, so prefer a ``poke_interval`` of a minute or more.

    :param endpoint: Path under the connection's Base URL (templated).
    :param request_params: Query parameters (templated); not ``params``, which is every
        operator's own argument (the DAG/task params).
    :param headers: Extra headers (templated).
    :param response_check: The check; see above.
    :param packly_conn_id: The ``packly`` connection.
    :param deferrable: Wait on the triggerer; default ``[operators] default_deferrable``.
    """

    template_fields = ("endpoint", "request_params", "headers")

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
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise PacklyValidationError(f"endpoint must be a path such as '/v1/reseller/orders'; got {endpoint!r}.")
        if response_check is not None and not callable(response_check):
            raise PacklyValidationError("response_check must be a callable.")
        self.endpoint = endpoint
        self.request_params = request_params
        self.headers = headers
        self.response_check = response_check

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
        from airflow.sdk.bases.decorator import determine_kwargs

        kwargs = determine_kwargs(self.response_check, [response], context)
        return self.response_check(response, **kwargs)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self._first_poke(context)
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        self._defer(deadline_after(self.timeout))

    def _defer(self, deadline: str) -> None:
        from airflow_provider_packly.triggers.packly import PacklyWaitTrigger

        trigger = PacklyWaitTrigger.after(self.poke_interval, deadline=deadline)
        self.log.info("Deferring until %s (deadline %s); the check runs again on resume.", trigger.wake_at, deadline)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=self._defer_timeout(deadline))

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after ``PacklyWaitTrigger``: poke again, then succeed, time out or defer again."""
        event = self._read_event(event, ("deadline",))
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(
                f"PacklySensor timed out: GET {self.endpoint} did not pass the check by {event['deadline']}."
            )
        if event["status"] != "success":
            raise AirflowException(f"PacklyWaitTrigger sent an unexpected {event['status']!r} event: {event['message']}")
        result = self.poke(context)
        if result:
            self.log.info("Success criteria met. Exiting.")
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        deadline = str(event["deadline"])
        try:
            remaining = seconds_until(parse_deadline(deadline))
        except PacklyValidationError as exc:
            raise AirflowException(f"PacklyWaitTrigger sent an event with a bad deadline: {exc}") from exc
        if remaining <= 0:
            raise AirflowSensorTimeout(
                f"PacklySensor timed out: GET {self.endpoint} did not pass the check by {deadline}."
            )
        self._defer(deadline)
