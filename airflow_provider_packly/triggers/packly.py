"""Deferrable waiting for Packly, on the triggerer.

Two kinds of waiting, one trigger class each:

* ``PacklyOrderStatusTrigger``: polls one order until it meets an ``OrderCondition`` (its own
  status, or every product's status), shared by ``PacklyOrderStatusSensor`` and
  ``PacklyOrderProductsShippedSensor``;
* ``PacklyWaitTrigger``: waits until the next poke time of ``PacklySensor``, whose
  ``response_check`` is a Python callable and so can only run on a worker (see the sensor).

Both follow the same contract:

* ``serialize()`` is the whole state: plain, JSON-ready, secret-free data (a connection id,
  never a connection; an absolute ``deadline`` computed once when the sensor deferred, so a
  triggerer restart that re-creates the trigger does not reset the timeout);
* ``run()`` yields exactly one ``TriggerEvent`` whose payload has a ``status`` from
  ``rules.EVENT_STATUSES`` (``success``, ``failed``, ``timeout``, ``error``) and a
  ``message``, plus plain data;
* Packly is reached only through the async hook (async connection lookup,
  apache/airflow#70398) in one scan of the order list shared per event loop and connection
  (``order_scan``), only with ``GET`` (deferral is for waiting, never for changing state,
  apache/airflow#67945; the only POST ever sent is the OAuth2 token request), and the hook is
  closed before the event is yielded;
* the loop sleeps with ``asyncio.sleep``; the deadline also cancels a poll still in flight;
  transient errors (network, 408/429/5xx) are logged and
  polling goes on until the deadline; permanent ones end with ``error``;
* at most ``max_polls_in_flight`` polls run at once per triggerer event loop, so a triggerer
  with many waiting sensors queues its polls instead of overloading its connection pools and
  turning the overload into timeouts.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_packly.exceptions import PacklyError
from airflow_provider_packly.triggers import order_scan
from airflow_provider_packly.triggers.rules import (
    ConditionResult,
    OrderCondition,
    deadline_after,
    error_to_payload,
    is_transient,
    make_event,
    parse_deadline,
    seconds_until,
)

if TYPE_CHECKING:
    from airflow_provider_packly.hooks.packly import PacklyHook

__all__ = ["PacklyOrderStatusTrigger", "PacklyWaitTrigger"]

_MODULE = "airflow_provider_packly.triggers.packly"

_poll_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


#: How long the look taken at (or, after a triggerer outage, past) the deadline may take: it
#: has no time of the deadline's left, and without it the event could not say what Packly says.
FINAL_LOOK_SECONDS = 30.0
#: A poll starting this close to the deadline is the final look.
_AT_DEADLINE = 0.05


def _poll_slot(limit: int) -> asyncio.Semaphore:
    """The running loop's semaphore bounding Packly polls in flight (one per event loop)."""
    loop = asyncio.get_running_loop()
    semaphore = _poll_slots.get(loop)
    if semaphore is None:
        semaphore = _poll_slots[loop] = asyncio.Semaphore(limit)
    return semaphore


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds; got {value!r}.")
    return float(value)


class PacklyOrderStatusTrigger(BaseTrigger):
    """Poll a Packly order until it meets ``condition``; yield one event.

    :param order_id: The order to watch (found by paging ``/v1/reseller/orders``: Packly
        documents no by-id endpoint).
    :param condition: ``OrderCondition.to_dict()``: what success and failure look like.
    :param deadline: ISO-8601 UTC timestamp after which the event is ``timeout``.
    :param packly_conn_id: The ``packly`` connection (looked up asynchronously).
    :param poll_interval: Seconds between two polls.
    :param page_size: ``limit`` used when paging through the orders.

    It looks at the order at least once, and once more at the deadline, even when it starts
    after the deadline (re-created after a triggerer outage): the event says what Packly says
    then, not merely that time ran out.

    Event payload: ``status``, ``message``, ``order_id``, ``order_status`` (last seen, or
    ``None``), ``product_statuses`` (product id -> status, last seen), ``condition``,
    ``deadline``, and for ``error`` an ``error`` mapping (``rules.error_to_payload``).
    """

    #: Polls in flight at once in one triggerer event loop, all Packly order triggers together.
    max_polls_in_flight = 32

    def __init__(
        self,
        *,
        order_id: str,
        condition: dict[str, Any],
        deadline: str,
        packly_conn_id: str = "packly_default",
        poll_interval: float = 30.0,
        page_size: int = 50,
    ) -> None:
        # BaseTrigger.__init__ is unannotated, and the untyped_calls_exclude in pyproject.toml
        # misses calls through super() (python/mypy#16653).
        super().__init__()  # type: ignore[no-untyped-call]
        if not isinstance(order_id, str) or not order_id.strip():
            raise ValueError(f"order_id must be a non-empty string; got {order_id!r}.")
        self.order_id = order_id
        self.condition = OrderCondition.from_dict(condition).to_dict()
        self.deadline = parse_deadline(deadline).isoformat()
        self.packly_conn_id = packly_conn_id
        self.poll_interval = _positive(poll_interval, "poll_interval")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
            raise ValueError(f"page_size must be a positive whole number; got {page_size!r}.")
        self.page_size = page_size

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{_MODULE}.{type(self).__name__}",
            {
                "order_id": self.order_id,
                "condition": dict(self.condition),
                "deadline": self.deadline,
                "packly_conn_id": self.packly_conn_id,
                "poll_interval": self.poll_interval,
                "page_size": self.page_size,
            },
        )

    def _make_hook(self) -> PacklyHook:
        from airflow_provider_packly.hooks.packly import PacklyHook

        # One connection pool per triggerer loop, however many triggers wait (see the hook).
        return PacklyHook(self.packly_conn_id, shared_async_client=True)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        payload = await self._wait()
        yield TriggerEvent(payload)

    def _event(self, status: str, message: str, last: ConditionResult | None, **extra: Any) -> dict[str, Any]:
        return make_event(
            status,
            message,
            order_id=self.order_id,
            order_status=last.order_status if last else None,
            product_statuses=dict(last.product_statuses) if last else {},
            condition=dict(self.condition),
            deadline=self.deadline,
            **extra,
        )

    def _timeout(self, last: ConditionResult | None) -> dict[str, Any]:
        seen = f" Last status seen: {last.order_status!r}." if last else " Its status could not be read before then."
        return self._event(
            "timeout",
            f"Packly order {self.order_id} did not meet the condition "
            f"({OrderCondition.from_dict(self.condition).describe()}) by the deadline {self.deadline}.{seen}",
            last,
        )

    async def _wait(self) -> dict[str, Any]:
        """Poll until the condition decides or the deadline passes; always look at least once.

        The last poll is at (or, for a trigger re-created after a triggerer outage, after) the
        deadline: an order that closed while nobody was looking is reported as closed, and a
        ``timeout`` always carries the status last seen.
        """
        condition = OrderCondition.from_dict(self.condition)
        deadline = parse_deadline(self.deadline)
        last: ConditionResult | None = None
        read_at: float | None = None  # when the last answer was read (scan.clock)
        wake_at: float | None = None  # when this poll was due
        try:
            # One scan of the order list serves every trigger of this loop on this connection.
            async with order_scan.subscribe(
                ("orders", self.packly_conn_id, self.page_size),
                self._make_hook,
                order_id=self.order_id,
                page_size=self.page_size,
                poll_slot=lambda: _poll_slot(self.max_polls_in_flight),
            ) as scan:
                while True:
                    try:
                        # The deadline bounds a poll in flight too (waiting for a slot included):
                        # a stuck poll must neither overrun it nor keep holding a slot. The look
                        # taken at or past the deadline has FINAL_LOOK_SECONDS of its own.
                        budget = seconds_until(deadline)
                        final = budget <= _AT_DEADLINE
                        with anyio.move_on_after(FINAL_LOOK_SECONDS if final else budget) as poll:
                            # A newer answer than the last, at most one interval old; the final
                            # look wants a new one.
                            order, answer_read_at = await scan.read(
                                self.order_id,
                                max_age=0.0 if final else self.poll_interval,
                                after=read_at,
                                due=None if final else wake_at,
                            )
                        if poll.cancelled_caught:
                            return self._timeout(last)
                        # The next poll is one interval after the answer was read: then every
                        # trigger of the scan group is served by the same next scan.
                        read_at, wake_at = answer_read_at, answer_read_at + self.poll_interval
                    except PacklyError as exc:
                        if not is_transient(exc):
                            return self._event("error", str(exc), last, error=error_to_payload(exc))
                        self.log.warning("Packly order %s: transient error, polling on: %s", self.order_id, exc)
                        wake_at = scan.clock() + self.poll_interval
                    else:
                        last = condition.evaluate(order)
                        if last.outcome != "waiting":
                            return self._event(last.outcome, last.message, last)
                        self.log.info("%s", last.message)
                    remaining = seconds_until(deadline)
                    if remaining <= 0 and final:
                        return self._timeout(last)
                    # Past the deadline after a regular poll (answered before it): the last look next.
                    await asyncio.sleep(min(max(wake_at - scan.clock(), 0.0), max(remaining, 0.0)))
        except PacklyError as exc:  # e.g. the connection's settings cannot be used
            return self._event("error", str(exc), last, error=error_to_payload(exc))
        except Exception as exc:  # a bug or an unexpected answer: one clear event, not a crash loop
            self.log.exception("Packly order trigger for %s failed unexpectedly", self.order_id)
            return self._event(
                "error",
                f"Waiting for Packly order {self.order_id} failed unexpectedly: {type(exc).__name__}: {exc}",
                last,
                error={"type": type(exc).__name__, "message": str(exc)},
            )


class PacklyWaitTrigger(BaseTrigger):
    """Wait until ``wake_at`` (never past ``deadline``), then yield one event; no I/O at all.

    Used by ``PacklySensor``: its ``response_check`` runs on the worker when the task resumes.
    ``success`` means "the wait is over: poke now"; ``timeout`` means the deadline had already
    passed when the trigger started (e.g. it was re-created after a triggerer outage): the
    sensor still pokes once more on resume before it times out. The event echoes ``deadline``
    so the sensor can defer again with the same deadline.
    """

    def __init__(self, *, wake_at: str, deadline: str) -> None:
        # BaseTrigger.__init__ is unannotated, and the untyped_calls_exclude in pyproject.toml
        # misses calls through super() (python/mypy#16653).
        super().__init__()  # type: ignore[no-untyped-call]
        self.wake_at = parse_deadline(wake_at).isoformat()
        self.deadline = parse_deadline(deadline).isoformat()

    @classmethod
    def after(cls, seconds: float, *, deadline: str) -> PacklyWaitTrigger:
        """A trigger waking ``seconds`` from now, or at ``deadline`` if that comes first."""
        wake_at = min(parse_deadline(deadline_after(seconds)), parse_deadline(deadline))
        return cls(wake_at=wake_at.isoformat(), deadline=deadline)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{_MODULE}.{type(self).__name__}", {"wake_at": self.wake_at, "deadline": self.deadline})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = parse_deadline(self.deadline)
        if seconds_until(deadline) <= 0:
            yield TriggerEvent(
                make_event("timeout", f"The sensor's deadline {self.deadline} has passed.", deadline=self.deadline)
            )
            return
        wake_at = min(parse_deadline(self.wake_at), deadline)
        await asyncio.sleep(max(0.0, seconds_until(wake_at)))
        yield TriggerEvent(make_event("success", "Time to poke again.", deadline=self.deadline))
