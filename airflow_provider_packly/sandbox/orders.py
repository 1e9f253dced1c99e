"""The sandbox's seeded order book and the timelines its orders follow.

Packly documents the order and product states but neither how fast they change nor any
endpoint that changes them, so everything here is the sandbox's own, deterministic choice.

Orders are numbered ``1..order_count`` with ids ``ORD-0001``... and purchase orders
``PO-2026-0001``... . Each order's status is a pure function of the time elapsed on the
config clock since the order was first listed (see :func:`order_status` and
:meth:`~airflow_provider_packly.sandbox.state.SandboxState.order_elapsed`), which makes it
trivial to test with a fake clock. Time is counted in *steps* of
``SandboxConfig.order_step_seconds``. "t=0" below is the moment a listing first serves the
order (not the moment the sandbox started), so a DAG that waits on ``ORD-0001`` sees it open
however long the sandbox has been up; ``POST /_sandbox/reset-clock`` starts every order again.

Regular orders walk ``waiting_execute_payment -> pending_payment -> paid -> in_processing ->
closed``, one state per step, starting from a per-order offset (:func:`order_offset`), so at
any moment during the first ~16 steps some orders are mid-way. Their products walk
``waiting_execute_payment -> pending -> waiting_upload_confirmation -> waiting_file_check ->
in_processing -> shipped``; the order's ``in_processing`` step is split in two halves
(``waiting_file_check`` then ``in_processing`` for the products) and every product of a
``closed`` order is ``shipped``.

Well-known orders (documented because example DAGs and tests wait on them):

* ``ORD-0001``: ``waiting_execute_payment`` at t=0, ``pending_payment`` at 1 step, ``paid``
  at 2, ``in_processing`` at 3, ``closed`` from 4 steps on (8 s with the default 2 s step).
* ``ORD-0002``: ``deleted`` from the start, products ``deleted``, forever.
* ``ORD-0007``: ``waiting_execute_payment`` at t=0, ``pending_payment`` at 1 step,
  ``canceled`` from 2 steps on (products ``canceled``). Every 7th order (7, 14, 21, ...)
  is a canceled one, with its own offset.
* ``ORD-0017`` is already ``closed`` at t=0.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

ORDER_TIMELINE: tuple[str, ...] = (
    "waiting_execute_payment",
    "pending_payment",
    "paid",
    "in_processing",
    "closed",
)
"""The documented order states a regular order walks through, in order."""

CANCELED_ORDER_TIMELINE: tuple[str, ...] = (
    "waiting_execute_payment",
    "pending_payment",
    "canceled",
)
"""The path of a canceled order (every 7th): canceled after its second step."""

PRODUCT_TIMELINE: tuple[str, ...] = (
    "waiting_execute_payment",
    "pending",
    "waiting_upload_confirmation",
    "waiting_file_check",
    "in_processing",
    "shipped",
)
"""The documented product states a product of a regular order walks through."""

DELETED_ORDER_NUMBER = 2
CANCELED_EVERY = 7
TAX_RATE = Decimal("0.22")
_EPSILON = 1e-9  # absorbs float error such as 0.4 / 0.1 == 3.9999999999999996
_CREATED_AT_ORIGIN = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc)


def order_id(number: int) -> str:
    """Return the id of order ``number`` (1-based), e.g. ``ORD-0001``."""
    return f"ORD-{number:04d}"


def is_deleted(number: int) -> bool:
    """Whether order ``number`` is ``deleted`` from the start (only ``ORD-0002``)."""
    return number == DELETED_ORDER_NUMBER


def is_canceled(number: int) -> bool:
    """Whether order ``number`` ends ``canceled`` instead of ``closed`` (every 7th)."""
    return number % CANCELED_EVERY == 0


def order_offset(number: int) -> int:
    """Return how many steps ahead (positive) or behind (negative) order ``number`` starts.

    ``ORD-0001`` and ``ORD-0007`` start at 0 (the beginning of their timelines, see the module
    docstring); the others are spread between -12 (starts 12 steps late, so closes at 16
    steps) and +4 (already closed at t=0) by a fixed formula.
    """
    if number in (1, CANCELED_EVERY):
        return 0
    return 4 - (number * 7) % 17


def _position(number: int, elapsed_steps: float) -> float:
    """Return the order's (unclamped) position on its timeline, in steps."""
    return elapsed_steps + order_offset(number)


def order_status(number: int, elapsed_steps: float) -> str:
    """Return the status of order ``number`` after ``elapsed_steps`` steps (a float)."""
    if is_deleted(number):
        return "deleted"
    timeline = CANCELED_ORDER_TIMELINE if is_canceled(number) else ORDER_TIMELINE
    index = math.floor(_position(number, elapsed_steps) + _EPSILON)
    return timeline[min(max(index, 0), len(timeline) - 1)]


def product_status(number: int, elapsed_steps: float) -> str:
    """Return the status shared by every product of order ``number`` at ``elapsed_steps``."""
    status = order_status(number, elapsed_steps)
    if status in ("deleted", "canceled"):
        return status
    if status == "in_processing":
        fraction = _position(number, elapsed_steps) + _EPSILON - 3
        return "waiting_file_check" if fraction < 0.5 else "in_processing"
    return {
        "waiting_execute_payment": "waiting_execute_payment",
        "pending_payment": "pending",
        "paid": "waiting_upload_confirmation",
        "closed": "shipped",
    }[status]


def _money(value: Decimal) -> Decimal:
    """Round to cents, half up."""
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def build_order(number: int, elapsed_steps: float) -> dict[str, Any]:
    """Return the JSON form of order ``number`` at ``elapsed_steps``.

    ``created_at`` (an ISO 8601 UTC timestamp, one order every 26 hours from 2026-01-05) is
    the sandbox's own field: not documented by Packly. Amounts are EUR with 22 % tax.
    """
    product_count = number % 3 + 1
    status = product_status(number, elapsed_steps)
    items = [{"id": f"PRD-{number:04d}-{k}", "status": status} for k in range(1, product_count + 1)]
    excluded = _money(
        sum(
            (
                Decimal(40 + (number * 53 + k * 31) % 250) + Decimal((number * k * 7) % 100) / 100
                for k in range(1, product_count + 1)
            ),
            Decimal(0),
        )
    )
    tax = _money(excluded * TAX_RATE)
    return {
        "id": order_id(number),
        "purchase_order": f"PO-2026-{number:04d}",
        "status": order_status(number, elapsed_steps),
        "total_amount_tax_excluded": float(excluded),
        "tax_amount": float(tax),
        "total_amount_tax_included": float(excluded + tax),
        "created_at": (_CREATED_AT_ORIGIN + timedelta(hours=26 * (number - 1))).isoformat().replace("+00:00", "Z"),
        "items": items,
    }


def page_numbers(*, order_count: int, page: int, limit: int, descending: bool) -> list[int]:
    """Return the order numbers of one page sorted by creation (which is also id order).

    ``page`` is zero-based; a page past the end is an empty list.
    """
    numbers = list(range(1, order_count + 1))
    if descending:
        numbers.reverse()
    start = page * limit
    return numbers[start : start + limit]


def list_orders(
    *,
    order_count: int,
    elapsed_seconds: float,
    step_seconds: float,
    page: int,
    limit: int,
    descending: bool,
) -> list[dict[str, Any]]:
    """Return one page of orders, every one ``elapsed_seconds`` into its timeline.

    ``page`` is zero-based; a page past the end is an empty list. (The app gives each order
    its own elapsed time: see :meth:`SandboxState.order_elapsed`.)
    """
    elapsed_steps = elapsed_seconds / step_seconds
    numbers = page_numbers(order_count=order_count, page=page, limit=limit, descending=descending)
    return [build_order(n, elapsed_steps) for n in numbers]
