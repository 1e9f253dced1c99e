"""One shared pass over ``/v1/reseller/orders`` per poll, for every Packly trigger in an event loop.

Packly documents no by-id order endpoint: finding one order means paging the whole list. When
every waiting trigger paged by itself, a triggerer with N waiting sensors over P pages sent
about N x P/2 order requests per poll interval. Here the triggers of one event loop that use
the same connection (and page size) form one ``OrderScan`` group instead, and one pass over the
list serves them all:

* a trigger joins its group when it starts waiting and leaves when it ends
  (``subscribe``); the last one to leave closes the group (its scan, its hook). Nothing of
  this is in a trigger's ``serialize()`` output: a triggerer restart re-forms the groups as
  its triggers start again;
* ``OrderScan.order(order_id, max_age=...)`` answers from the last scan when that saw the
  order at most ``max_age`` seconds ago, and otherwise waits for the running scan (or starts
  one). Triggers with different poll intervals thus each get an answer no older than their
  own interval, and all triggers together cause about one scan per (shortest) interval;
* a scan runs in a task of its own: a trigger cancelled while it waits (deadline, user
  action) cancels only its own wait, never the scan the others wait for;
* a scan stops early once it has seen every order its group's triggers wait for; otherwise
  it reads until the last page (``resources.OrderPager``: the same paging rule as the hook);
* a failed scan fails every wait it was serving with the same error, so a transient error is
  transient for everyone (each trigger then polls on, as before); an order missing from a
  complete listing fails only the waits for that order (``PacklyOrderNotFound``);
* ``OrderScan.listing(max_age=...)`` is the whole list, for watchers that look at every order
  (``PacklyOrderEventTrigger``).
* answers are handed out ``SETTLE_BATCH`` per turn of the event loop: each woken trigger
  runs its step in the turn after, and 1,000 woken in one turn held the loop (a triggerer's
  heartbeat, every other trigger) for about 100 ms.

Each group counts its scans, order requests, answers and waiters (``OrderScan.stats``): the
shared-scan test and the triggerer benchmark read them. Each pass is also sent to Airflow's
``Stats`` once, with the number of waits it answered (``metrics.record_scan``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from airflow_provider_packly import metrics
from airflow_provider_packly.exceptions import PacklyOrderNotFound
from airflow_provider_packly.resources import ORDERS_PATH, OrderPager

if TYPE_CHECKING:
    from airflow_provider_packly.hooks.packly import PacklyHook

__all__ = ["OrderScan", "ScanStats", "groups_in_running_loop", "order_not_found", "subscribe"]

#: Makes the hook a group scans with (the first subscriber's; every subscriber of one group
#: names the same connection).
HookFactory = Callable[[], "PacklyHook"]
#: Bounds requests in flight across groups (the trigger module's per-loop poll semaphore).
SlotFactory = Callable[[], AbstractAsyncContextManager[Any]]


def order_not_found(order_id: str) -> PacklyOrderNotFound:
    """The error for an order that a complete listing did not contain (as ``aget_order`` says it)."""
    return PacklyOrderNotFound(
        f"No Packly order with id {order_id!r} was found in /v1/reseller/orders; check the id and the "
        "connection's environment (sandbox and live orders are separate)."
    )


@dataclass
class ScanStats:
    """What one group did: for tests, the benchmark and logs."""

    #: Passes over the list started (complete or stopped early).
    scans: int = 0
    #: Order-list requests sent (pages read, the last empty page included).
    requests: int = 0
    #: Answers given to waits, from a scan or from the last scan's cache.
    answers: int = 0
    #: Most waits one scan served.
    most_waiters: int = 0


@dataclass(eq=False)
class _Wait:
    """One pending question: one order (``order_id``) or the whole list (``None``)."""

    order_id: str | None
    #: Only an answer read at or after this (``clock``) time will do ...
    not_before: float
    #: ... and strictly after this one (the asker's previous answer).
    after: float
    future: asyncio.Future[tuple[Any, float]]
    #: Pending when the running scan sent its first request: a complete scan that misses the
    #: order proves it absent. A wait that joined later is carried to the next scan instead.
    covered: bool = False


class OrderScan:
    """The order scans of one group (event loop + connection + page size); see the module."""

    #: The clock answers are timed with (monotonic seconds); replaceable in tests.
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(
        self, key: Hashable, make_hook: HookFactory, *, page_size: int, poll_slot: SlotFactory | None = None
    ) -> None:
        self.key = key
        self.page_size = page_size
        self.stats = ScanStats()
        self._make_hook = make_hook
        self._poll_slot = poll_slot
        self._hook: PacklyHook | None = None
        self._interest: Counter[str] = Counter()  # order id -> triggers waiting for it
        self._listeners = 0  # subscribers that read whole listings
        self._cache: dict[str, tuple[dict[str, Any], float]] = {}  # order id -> (order, read at)
        self._listing: tuple[list[dict[str, Any]], float] | None = None
        self._pending: list[_Wait] = []
        self._task: asyncio.Task[None] | None = None

    # -- membership -------------------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return sum(self._interest.values()) + self._listeners

    def _join(self, order_id: str | None) -> None:
        if order_id is None:
            self._listeners += 1
        else:
            self._interest[order_id] += 1

    def _leave(self, order_id: str | None) -> None:
        if order_id is None:
            self._listeners -= 1
            if not self._listeners:
                self._listing = None
        else:
            self._interest[order_id] -= 1
            if self._interest[order_id] <= 0:
                del self._interest[order_id]
                self._cache.pop(order_id, None)

    async def _close(self) -> None:
        """Stop the scan and close the hook: nobody is left to serve."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        hook, self._hook = self._hook, None
        if hook is not None:
            await hook.aclose()

    # -- questions --------------------------------------------------------------------------------

    async def order(self, order_id: str, *, max_age: float) -> dict[str, Any]:
        """The order as a scan read it at most ``max_age`` seconds ago (a copy).

        :raises PacklyOrderNotFound: a complete listing since the question did not contain it.
        :raises PacklyError: the scan serving the question failed (the same error for all).
        """
        return (await self.read(order_id, max_age=max_age))[0]

    async def read(
        self, order_id: str, *, max_age: float, after: float | None = None, due: float | None = None
    ) -> tuple[dict[str, Any], float]:
        """``order``, with the (``clock``) time it was read.

        Only a read at most ``max_age`` seconds older than ``due`` (the time the poll was due;
        now if not given or later) and later than ``after`` (the asker's previous answer) will
        do. A poller that is due one interval after its last answer was read thus gets each
        answer at most one interval old, and all pollers of a group end up served by about one
        scan per interval, whenever each got its last answer. Measuring from ``due`` rather
        than now means that a poller the event loop runs late is not made later still by a
        scan of its own: the scan its siblings started serves it.
        """
        now = self.clock()
        not_before = (now if due is None else min(due, now)) - max_age
        floor = -math.inf if after is None else after
        cached = self._cache.get(order_id)
        if cached is not None and cached[1] >= not_before and cached[1] > floor:
            self.stats.answers += 1
            return dict(cached[0]), cached[1]
        order, read_at = await self._ask(order_id, not_before, floor)
        return dict(order), read_at

    async def listing(self, *, max_age: float) -> list[dict[str, Any]]:
        """Every order, from one complete scan that started at most ``max_age`` seconds ago.

        The list is shared with every other reader: do not change it or its orders.
        """
        if self._listing is not None and self._listing[1] >= self.clock() - max_age:
            self.stats.answers += 1
            return self._listing[0]
        result: list[dict[str, Any]] = (await self._ask(None, self.clock() - max_age, -math.inf))[0]
        return result

    async def _ask(self, order_id: str | None, not_before: float, after: float) -> tuple[Any, float]:
        wait = _Wait(order_id, not_before, after, asyncio.get_running_loop().create_future())
        self._pending.append(wait)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"Packly order scan {self.key}")
        try:
            return await wait.future
        finally:  # answered, or this waiter was cancelled: the scan goes on for the others
            with contextlib.suppress(ValueError):
                self._pending.remove(wait)

    # -- the scan ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._pending:
            try:
                served = await self._scan()
            except Exception as exc:  # noqa: BLE001 - handed to every waiter, who decides
                pending, self._pending = self._pending, []
                served = len(pending)
                await _settle([(wait, exc) for wait in pending])
            metrics.record_scan(served)  # once per pass, failed passes included

    async def _scan(self) -> int:
        """One pass over the list; returns how many waits it answered."""
        from airflow_provider_packly.hooks.packly import json_body

        if self._hook is None:
            self._hook = self._make_hook()
        hook = self._hook
        pager = OrderPager(limit=self.page_size)
        self.stats.scans += 1
        started = self.clock()
        listing: list[dict[str, Any]] | None = [] if self._listeners else None
        seen: set[str] = set()
        served = 0
        while not pager.done:
            sent_at = self.clock()
            if pager.page == 0:
                for wait in self._pending:
                    wait.covered = True
            if self._poll_slot is None:
                document = json_body(await hook.arequest("GET", ORDERS_PATH, params=pager.params()))
            else:
                async with self._poll_slot():
                    document = json_body(await hook.arequest("GET", ORDERS_PATH, params=pager.params()))
            self.stats.requests += 1
            found: dict[str, dict[str, Any]] = {}
            for order in pager.accept(document):
                if not isinstance(order, Mapping):
                    continue
                order_id = str(order.get("id"))
                if order_id in self._interest:
                    self._cache[order_id] = (order, sent_at)
                    found[order_id] = order
                if listing is not None:
                    listing.append(order)
            seen.update(found)
            if found:
                served += await self._answer(_order_answers(found, sent_at))
            if all(order_id in seen for order_id in self._interest) and not any(
                wait.order_id is None and wait.covered for wait in self._pending
            ):
                break  # every order waited for has been seen: the rest of the list is no one's
        if pager.done:  # a complete listing: answers whole-list waits, proves absent orders absent
            if listing is not None:
                complete = listing
                self._listing = (complete, started)
                served += await self._answer(_listing_answers(complete, started))
            for order_id in set(self._cache) - seen:
                del self._cache[order_id]
            missing = [
                (wait, order_not_found(wait.order_id))
                for wait in self._pending
                if wait.order_id is not None and wait.covered and wait.order_id not in seen
            ]
            for wait, _ in missing:
                self._pending.remove(wait)
            served += len(missing)
            await _settle(missing)
        self.stats.most_waiters = max(self.stats.most_waiters, served)
        return served

    async def _answer(self, answer_for: Callable[[_Wait], Any]) -> int:
        """Resolve every pending wait ``answer_for`` has an answer for; return how many.

        The waits are taken out of ``_pending`` before the first ``await`` (askers join and
        leave it meanwhile), then resolved a batch per turn of the loop (``_settle``)."""
        answered: list[tuple[_Wait, Any]] = []
        still: list[_Wait] = []
        for wait in self._pending:
            answer = answer_for(wait)
            if answer is None:
                still.append(wait)
            else:
                answered.append((wait, answer))
        self._pending = still
        self.stats.answers += len(answered)
        await _settle(answered)
        return len(answered)


#: Waits resolved per turn of the event loop. Each woken trigger runs its step (the condition,
#: a log line) in the turn after; 1,000 woken at once held a triggerer's loop for ~100 ms.
SETTLE_BATCH = 50


async def _settle(outcomes: list[tuple[_Wait, Any]]) -> None:
    """Give each wait its outcome (an answer, or an exception it raises), ``SETTLE_BATCH`` per
    turn of the loop, so that other tasks (a trigger's heartbeat, another group's scan) run in
    between. Cancelled midway (the group closed), the rest are resolved at once: none is lost."""
    settled = 0
    try:
        while settled < len(outcomes):
            if settled:
                await asyncio.sleep(0)
            for wait, outcome in outcomes[settled : settled + SETTLE_BATCH]:
                _resolve(wait, outcome)
            settled += SETTLE_BATCH
    finally:
        for wait, outcome in outcomes[settled:]:
            _resolve(wait, outcome)


def _resolve(wait: _Wait, outcome: Any) -> None:
    if wait.future.done():  # answered already, or its asker was cancelled
        return
    if isinstance(outcome, BaseException):
        wait.future.set_exception(outcome)
    else:
        wait.future.set_result(outcome)


def _order_answers(found: Mapping[str, dict[str, Any]], read_at: float) -> Callable[[_Wait], Any]:
    """Answers for the waits of orders in ``found`` (read at ``read_at``) that such an answer satisfies."""

    def answer(wait: _Wait) -> Any:
        if wait.order_id is None or wait.not_before > read_at or wait.after >= read_at:
            return None
        order = found.get(wait.order_id)
        return None if order is None else (order, read_at)

    return answer


def _listing_answers(listing: list[dict[str, Any]], read_at: float) -> Callable[[_Wait], Any]:
    """Answers for the whole-list waits that were pending when the complete scan began."""

    def answer(wait: _Wait) -> Any:
        return (listing, read_at) if wait.order_id is None and wait.covered else None

    return answer


# -- the per-loop registry ------------------------------------------------------------------------

_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, OrderScan]] = weakref.WeakKeyDictionary()


def groups_in_running_loop() -> dict[Hashable, OrderScan]:
    """The running event loop's groups by key (read-only use: tests and the benchmark)."""
    return dict(_groups.get(asyncio.get_running_loop(), {}))


@contextlib.asynccontextmanager
async def subscribe(
    key: Hashable,
    make_hook: HookFactory,
    *,
    order_id: str | None,
    page_size: int,
    poll_slot: SlotFactory | None = None,
) -> AsyncIterator[OrderScan]:
    """Join the running loop's group for ``key`` (creating it) while the block runs.

    ``order_id`` is the order this subscriber waits for (``None``: the whole list). The last
    subscriber to leave stops the group's scan and closes its hook, shielded from cancellation
    so that a cancelled trigger still cleans up.
    """
    by_key = _groups.setdefault(asyncio.get_running_loop(), {})
    group = by_key.get(key)
    if group is None:
        group = by_key[key] = OrderScan(key, make_hook, page_size=page_size, poll_slot=poll_slot)
    group._join(order_id)
    try:
        yield group
    finally:
        group._leave(order_id)
        if not group.subscribers:
            if by_key.get(key) is group:
                del by_key[key]
            with anyio.CancelScope(shield=True):
                await group._close()
