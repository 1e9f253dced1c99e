"""Pure rules shared by the sensors (poke path, on a worker) and the triggers (on the triggerer).

No I/O and no Airflow import here, so both paths decide the same way and the rules are
unit-tested without a network (``airflow_provider_packly.triggers.rules`` re-exports it):

* ``OrderStatus`` and ``ProductStatus``: the statuses Packly documents, as enums;
* ``OrderCondition``: what an order must look like for a sensor to succeed, fail or keep
  waiting, as plain data that travels in a trigger's ``serialize()`` output;
* the trigger event contract: the closed set of statuses, ``make_event`` and
  ``validate_event`` (the resume method rejects anything else);
* ``is_transient``: which errors are worth polling through until the deadline;
* ``error_to_payload`` / ``error_from_payload``: a Packly error carried in an event as plain
  data (``PacklyError.to_dict``) and raised again, of the same class and with the same
  fields and message, on the worker (``PacklyError.from_dict``);
* absolute deadlines as ISO-8601 UTC timestamps.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_packly.core.errors import (
    PacklyAPIError,
    PacklyAuthError,
    PacklyError,
    PacklyEventError,  # defined with every other error; importable from here as before
    PacklyTransportError,
    PacklyValidationError,
)

__all__ = [
    "EVENT_STATUSES",
    "ORDER_STATUSES",
    "PRODUCT_STATUSES",
    "TERMINAL_ORDER_STATUSES",
    "TERMINAL_PRODUCT_STATUSES",
    "ConditionKind",
    "ConditionResult",
    "EventStatus",
    "OrderCondition",
    "OrderStatus",
    "Outcome",
    "PacklyEventError",
    "ProductStatus",
    "deadline_after",
    "error_from_payload",
    "error_to_payload",
    "is_templated",
    "is_transient",
    "make_event",
    "normalise_statuses",
    "parse_deadline",
    "seconds_until",
    "validate_event",
]

Outcome = Literal["success", "failed", "waiting"]


class _Status(str, enum.Enum):
    """A status as Packly (or the trigger contract) spells it; equal to that plain string."""

    def __str__(self) -> str:  # the value on every Python (3.11 changed str() of mixed-in enums)
        return str(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """Every value, in the documented order."""
        return tuple(member.value for member in cls)

    @classmethod
    def is_documented(cls, value: object) -> bool:
        """Whether ``value`` is one of these statuses (a plain string or a member)."""
        return value in cls.values()


class OrderStatus(_Status):
    """An order's ``status``, as Packly documents them (packly.io/orders), in its order.

    Packly lists the statuses but documents neither their transitions nor which of them are
    final. ``is_terminal`` (``TERMINAL_ORDER_STATUSES``) is the provider's reading of the
    names, not Packly's word: ``closed``, ``canceled`` and ``deleted``, the statuses the
    order sensor waits for and fails on by default. Nothing decides on it alone: the sensors
    take their target and failure statuses as arguments.
    """

    WAITING_EXECUTE_PAYMENT = "waiting_execute_payment"
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    IN_PROCESSING = "in_processing"
    CLOSED = "closed"
    CANCELED = "canceled"
    DELETED = "deleted"

    @property
    def is_terminal(self) -> bool:
        """Whether the order can change no more, as the names suggest (Packly does not say)."""
        return self in TERMINAL_ORDER_STATUSES


class ProductStatus(_Status):
    """A product's (an order item's) ``status``, as Packly documents them, in its order.

    Packly does not document that items carry a status field (only that products have these
    states), nor which states are final. ``is_terminal`` (``TERMINAL_PRODUCT_STATUSES``) is
    the provider's reading of the names: ``shipped``, ``canceled`` and ``deleted``, as the
    products sensor's defaults assume.
    """

    WAITING_EXECUTE_PAYMENT = "waiting_execute_payment"
    PENDING = "pending"
    WAITING_UPLOAD_CONFIRMATION = "waiting_upload_confirmation"
    WAITING_FILE_CHECK = "waiting_file_check"
    IN_PROCESSING = "in_processing"
    WAITING_UPLOAD = "waiting_upload"
    SHIPPED = "shipped"
    CANCELED = "canceled"
    DELETED = "deleted"

    @property
    def is_terminal(self) -> bool:
        """Whether the product can change no more, as the names suggest (Packly does not say)."""
        return self in TERMINAL_PRODUCT_STATUSES


#: Order statuses read as final (not documented as such: see ``OrderStatus``).
TERMINAL_ORDER_STATUSES = frozenset({OrderStatus.CLOSED, OrderStatus.CANCELED, OrderStatus.DELETED})
#: Product statuses read as final (not documented as such: see ``ProductStatus``).
TERMINAL_PRODUCT_STATUSES = frozenset({ProductStatus.SHIPPED, ProductStatus.CANCELED, ProductStatus.DELETED})
#: The documented statuses as plain strings (the names older code imports).
ORDER_STATUSES = OrderStatus.values()
PRODUCT_STATUSES = ProductStatus.values()


class EventStatus(_Status):
    """The status of every event a Packly trigger yields: these, and nothing else."""

    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"


EVENT_STATUSES = EventStatus.values()


class ConditionKind(_Status):
    """What an ``OrderCondition`` looks at; each kind has its own documented statuses."""

    ORDER_STATUS = "order_status"
    PRODUCTS_STATUS = "products_status"

    @property
    def statuses(self) -> type[_Status]:
        """The statuses a condition of this kind may name."""
        return OrderStatus if self is ConditionKind.ORDER_STATUS else ProductStatus


#: HTTP statuses worth polling through: Packly or a proxy is overloaded or restarting.
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


# -- statuses and conditions ------------------------------------------------------------------


def normalise_statuses(value: Any, *, name: str, allowed: Iterable[str]) -> tuple[str, ...]:
    """``value`` as a tuple of documented statuses; a single string counts as one status."""
    allowed = tuple(allowed)
    if isinstance(value, str):
        value = (value,)
    if value is None or not isinstance(value, Iterable):
        raise PacklyValidationError(f"{name} must be a list of statuses; got {value!r}.")
    statuses = tuple(dict.fromkeys(value))  # keep order, drop repeats
    unknown = [status for status in statuses if status not in allowed]
    if unknown:
        raise PacklyValidationError(
            f"{name} has unknown status(es) {', '.join(map(repr, unknown))}; Packly documents: {', '.join(allowed)}."
        )
    return tuple(str(status) for status in statuses)  # plain strings, also for enum members


@dataclass(frozen=True)
class ConditionResult:
    """What one look at an order says: ``outcome`` plus plain data for logs and events."""

    outcome: Outcome
    order_status: str | None
    product_statuses: dict[str, str]
    message: str


@dataclass(frozen=True)
class OrderCondition:
    """A rule on one order, evaluated the same way by a sensor's ``poke`` and by the trigger.

    ``kind`` says what is looked at:

    * ``"order_status"``: the order's ``status``: success when it is in ``target_statuses``,
      failure when it is in ``failure_statuses``;
    * ``"products_status"``: the statuses of the order's products (``items``): success when
      every product's status is in ``target_statuses`` (and the order has at least one
      product), failure when the order's status or any product's status is in
      ``failure_statuses``.

    Anything else is "waiting". ``to_dict()``/``from_dict()`` give the plain data a trigger
    serializes.
    """

    kind: ConditionKind | Literal["order_status", "products_status"]
    target_statuses: tuple[str, ...]
    failure_statuses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not ConditionKind.is_documented(self.kind):
            raise PacklyValidationError(
                f"kind must be {' or '.join(map(repr, ConditionKind.values()))}; got {self.kind!r}."
            )
        kind = ConditionKind(self.kind)
        object.__setattr__(self, "kind", kind)
        allowed = kind.statuses.values()
        target = normalise_statuses(self.target_statuses, name="target_statuses", allowed=allowed)
        failure = normalise_statuses(self.failure_statuses, name="failure_statuses", allowed=allowed)
        if not target:
            raise PacklyValidationError("target_statuses must name at least one status.")
        both = [status for status in target if status in failure]
        if both:
            raise PacklyValidationError(f"{', '.join(map(repr, both))} cannot be both a target and a failure status.")
        object.__setattr__(self, "target_statuses", target)
        object.__setattr__(self, "failure_statuses", failure)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "target_statuses": list(self.target_statuses),
            "failure_statuses": list(self.failure_statuses),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderCondition:
        if not isinstance(data, Mapping):
            raise PacklyValidationError(f"An order condition must be a mapping; got {type(data).__name__}.")
        return cls(
            kind=data.get("kind"),  # type: ignore[arg-type]
            target_statuses=tuple(data.get("target_statuses") or ()),
            failure_statuses=tuple(data.get("failure_statuses") or ()),
        )

    def describe(self) -> str:
        what = "order status" if self.kind is ConditionKind.ORDER_STATUS else "every product's status"
        text = f"{what} in {', '.join(self.target_statuses)}"
        if self.failure_statuses:
            text += f" (failing on {', '.join(self.failure_statuses)})"
        return text

    def evaluate(self, order: Mapping[str, Any]) -> ConditionResult:
        """Decide from one order (as ``/v1/reseller/orders`` lists it)."""
        order_id = order.get("id")
        status = order.get("status")
        status = None if status is None else str(status)
        products = _product_statuses(order)
        where = f"Packly order {order_id}"
        if self.kind is ConditionKind.ORDER_STATUS:
            if status in self.target_statuses:
                return ConditionResult("success", status, products, f"{where} reached status {status!r}.")
            if status in self.failure_statuses:
                return ConditionResult(
                    "failed",
                    status,
                    products,
                    f"{where} has status {status!r}, a failure status: it will not reach "
                    f"{' or '.join(map(repr, self.target_statuses))}.",
                )
            return ConditionResult(
                "waiting",
                status,
                products,
                f"{where} has status {status!r}{_undocumented(status, OrderStatus)}; waiting.",
            )
        # products_status
        if status in self.failure_statuses:
            return ConditionResult(
                "failed",
                status,
                products,
                f"{where} has status {status!r}, a failure status; its products will not be "
                f"{' or '.join(map(repr, self.target_statuses))}.",
            )
        failed = {pid: pstatus for pid, pstatus in products.items() if pstatus in self.failure_statuses}
        if failed:
            listed = ", ".join(f"{pid} is {pstatus!r}" for pid, pstatus in failed.items())
            return ConditionResult("failed", status, products, f"{where}: {listed}, a failure status.")
        if not products:
            return ConditionResult("waiting", status, products, f"{where} lists no products yet; waiting.")
        pending = {pid: pstatus for pid, pstatus in products.items() if pstatus not in self.target_statuses}
        if not pending:
            return ConditionResult(
                "success",
                status,
                products,
                f"{where}: all {len(products)} product(s) are {' or '.join(map(repr, self.target_statuses))}.",
            )
        listed = ", ".join(f"{pid} is {pstatus!r}" for pid, pstatus in list(pending.items())[:5])
        more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
        return ConditionResult(
            "waiting",
            status,
            products,
            f"{where}: {len(pending)} of {len(products)} product(s) not there yet ({listed}{more}); waiting.",
        )


def _product_statuses(order: Mapping[str, Any]) -> dict[str, str]:
    items = order.get("items")
    if not isinstance(items, list):
        return {}
    statuses: dict[str, str] = {}
    for index, item in enumerate(items):
        if isinstance(item, Mapping):
            statuses[str(item.get("id", f"#{index}"))] = str(item.get("status"))
    return statuses


def _undocumented(status: str | None, documented: type[_Status]) -> str:
    return "" if documented.is_documented(status) else " (not a status Packly documents)"


def is_templated(value: Any) -> bool:
    """Whether ``value`` (or anything inside it) still holds a Jinja expression.

    Operators check such values only once Airflow has rendered them, at execute time.
    """
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_templated(k) or is_templated(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(is_templated(v) for v in value)
    return False


# -- errors ---------------------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether polling should go on after ``exc``: a network failure, a 5xx, a 429, a 408.

    A 401 after the hook's refresh, a 404, a validation error, a missing order or a bad
    connection setting are permanent: waiting would not change them.
    """
    if isinstance(exc, PacklyTransportError):
        return True
    if isinstance(exc, (PacklyAPIError, PacklyAuthError)):
        return exc.http_status in _TRANSIENT_HTTP
    return False


def error_to_payload(exc: PacklyError) -> dict[str, Any]:
    """A Packly error as plain data for an event (``PacklyError.to_dict``: never a secret)."""
    return exc.to_dict()


def error_from_payload(payload: Any) -> PacklyError:
    """The error ``error_to_payload`` described, to raise on the worker: same class, fields and message."""
    if not isinstance(payload, Mapping):
        return PacklyError(f"The Packly trigger failed without details ({payload!r}).")
    return PacklyError.from_dict(payload)


# -- deadlines ------------------------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def deadline_after(seconds: float, *, now: dt.datetime | None = None) -> str:
    """The absolute deadline ``seconds`` from ``now``, as an ISO-8601 UTC timestamp."""
    return ((now or _utcnow()) + dt.timedelta(seconds=seconds)).isoformat()


def parse_deadline(value: Any) -> dt.datetime:
    """Read a deadline written by ``deadline_after`` (or any ISO-8601 timestamp with an offset)."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PacklyValidationError(f"deadline must be an ISO-8601 timestamp; got {value!r}.") from None
    else:
        raise PacklyValidationError(f"deadline must be an ISO-8601 timestamp; got {value!r}.")
    if parsed.tzinfo is None:
        raise PacklyValidationError(f"deadline must carry a UTC offset; got {value!r}.")
    return parsed.astimezone(dt.timezone.utc)


def seconds_until(deadline: dt.datetime, *, now: dt.datetime | None = None) -> float:
    return (deadline - (now or _utcnow())).total_seconds()


# -- events ---------------------------------------------------------------------------------------


def make_event(status: EventStatus | str, message: str, **data: Any) -> dict[str, Any]:
    """A trigger event payload: ``status`` from ``EventStatus`` (as its plain string), a message, plain data."""
    if not EventStatus.is_documented(status):
        raise ValueError(f"unknown event status {status!r}")
    return {"status": str(EventStatus(status)), "message": message, **data}


def validate_event(event: Any, *, required: Iterable[str] = ()) -> dict[str, Any]:
    """``event`` checked: a mapping with a known ``status``, a ``message`` and ``required`` keys."""
    if not isinstance(event, Mapping):
        raise PacklyEventError(
            f"The Packly trigger sent a malformed event ({type(event).__name__}, expected a mapping with a status); "
            "the triggerer may run a different provider version."
        )
    status = event.get("status")
    if not EventStatus.is_documented(status):
        raise PacklyEventError(
            f"The Packly trigger sent an event with unknown status {status!r} (expected one of "
            f"{', '.join(EVENT_STATUSES)}); the triggerer may run a different provider version."
        )
    missing = [key for key in ("message", *required) if key not in event]
    if missing:
        raise PacklyEventError(
            f"The Packly trigger sent a {status!r} event without {', '.join(missing)}; "
            "the triggerer may run a different provider version."
        )
    return dict(event)
