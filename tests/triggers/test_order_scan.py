"""One shared order scan per event loop and connection (``triggers.order_scan``).

The headline test counts, it does not time: N order triggers wait in one event loop over P
pages of orders, and the order requests sent per poll round (every trigger polled once more)
stay within P + 1 (the empty page that ends a listing) + 1, for N = 1, 40 and 1,000. Before the
shared scan every trigger paged by itself: about N x P/2 requests per round.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import anyio
import httpx
import pytest

from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from airflow_provider_packly.triggers import order_scan
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after

from .fakes import TOKEN_PATH, envelope, fake_connection, order, page, sandbox_connection_json

ORDERS_PATH = "/v1/reseller/orders"
CLOSED = OrderCondition("order_status", ("closed",), ("canceled", "deleted")).to_dict()
#: Regular sandbox orders are never canceled: a trigger waiting for it waits until cancelled.
NEVER = OrderCondition("order_status", ("canceled",)).to_dict()


class OrderBook:
    """A counting Packly: ``count`` orders served in pages; ``gate`` can hold one page's answer."""

    def __init__(self, count: int, status: str = "paid") -> None:
        self.orders = [order(f"ORD-{n:04d}", status) for n in range(1, count + 1)]
        self.requests: list[int] = []  # the page of every order request, in order
        self.gates: dict[int, asyncio.Event] = {}
        self.asked: dict[int, asyncio.Event] = {}
        self.fail_next = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            return httpx.Response(200, json={"token_type": "bearer", "access_token": "t0k3n-x", "expires_in": 3600})
        number, limit = int(request.url.params["page"]), int(request.url.params["limit"])
        self.requests.append(number)
        if number in self.asked:
            self.asked[number].set()
        if number in self.gates:
            await self.gates[number].wait()
        if self.fail_next:
            self.fail_next -= 1
            return envelope(503, "INTERNAL_SERVER_ERROR", "busy")
        return page(*self.orders[number * limit : (number + 1) * limit])

    def use(self, mocker) -> None:
        transport = httpx.MockTransport(self)
        mocker.patch.object(
            PacklyOrderStatusTrigger,
            "_make_hook",
            lambda trigger: PacklyHook(connection=fake_connection(), async_transport=transport),
        )


def trigger(order_id: str, *, condition=CLOSED, poll_interval: float = 0.05, conn: str = "packly_default"):
    return PacklyOrderStatusTrigger(
        order_id=order_id,
        condition=condition,
        deadline=deadline_after(120),
        packly_conn_id=conn,
        poll_interval=poll_interval,
        page_size=50,
    )


async def first_event(t: PacklyOrderStatusTrigger) -> dict:
    async for event in t.run():
        return event.payload
    raise AssertionError("no event")


def count_polls(mocker):
    """Every poll of every trigger evaluates the condition once (before and after the change)."""
    return mocker.patch.object(OrderCondition, "evaluate", autospec=True, side_effect=OrderCondition.evaluate)


def poll_rounds(polls, triggers) -> float:
    """Poll intervals so far: the polls of the trigger that polled most (on time, every interval).

    A loaded event loop makes some triggers poll late, and fewer times; one interval is one poll
    of a trigger that kept its schedule.
    """
    waiting = Counter(t.order_id for t in triggers)
    seen = Counter(call.args[1]["id"] for call in polls.call_args_list)
    return max(seen[order_id] / count for order_id, count in waiting.items())


async def run_rounds(triggers, polls, *, rounds: int) -> None:
    """Run the triggers until every one has polled ``rounds`` times, then cancel them."""
    tasks = [asyncio.create_task(first_event(t)) for t in triggers]
    with anyio.fail_after(240):
        while polls.call_count < rounds * len(triggers):
            await asyncio.sleep(0.02)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert not any(task.done() and not task.cancelled() for task in tasks)  # all were still waiting


@pytest.mark.anyio
@pytest.mark.parametrize("waiting", [1, 40, 1000])
async def test_order_requests_per_poll_round_are_bounded_by_the_pages(mocker, waiting):
    book = OrderBook(400)  # 8 pages of 50, then the empty page that ends the listing
    book.use(mocker)
    polls = count_polls(mocker)
    ids = [book.orders[(i * 397) % 400]["id"] for i in range(waiting)]  # spread over every page
    waiting_triggers = [trigger(order_id, poll_interval=0.2) for order_id in ids]
    await run_rounds(waiting_triggers, polls, rounds=4)
    rounds = poll_rounds(polls, waiting_triggers)
    assert len(book.requests) / rounds <= 8 + 2, (len(book.requests), rounds)
    assert order_scan.groups_in_running_loop() == {}  # the last trigger to leave closed the group


@pytest.mark.anyio
async def test_a_trigger_cancelled_mid_scan_does_not_cancel_the_scan_for_the_others(mocker):
    book = OrderBook(150, status="closed")  # ORD-0120 is on page 2
    book.gates[1] = asyncio.Event()
    book.asked[1] = asyncio.Event()
    book.use(mocker)
    leaving = asyncio.create_task(first_event(trigger("ORD-0120")))
    staying = asyncio.create_task(first_event(trigger("ORD-0120")))
    await book.asked[1].wait()  # the scan is reading page 1 for both
    leaving.cancel()
    await asyncio.wait([leaving])
    book.gates[1].set()
    event = await staying
    assert event["status"] == "success" and event["order_status"] == "closed"
    assert book.requests == [0, 1, 2]  # one scan, not cancelled and not restarted
    assert order_scan.groups_in_running_loop() == {}


@pytest.mark.anyio
async def test_a_transient_scan_failure_is_transient_for_every_waiter(mocker):
    book = OrderBook(60, status="closed")
    book.fail_next = 1
    book.use(mocker)
    events = await asyncio.gather(*(first_event(trigger(f"ORD-00{n}")) for n in (10, 20, 55)))
    assert [event["status"] for event in events] == ["success"] * 3  # all polled on, none ended with error
    assert book.requests == [0, 0, 1]  # the failed scan, then one that served all three


@pytest.mark.anyio
async def test_an_order_missing_from_the_list_is_reported_to_its_own_trigger_only(mocker):
    book = OrderBook(60, status="closed")
    book.use(mocker)
    missing, present = await asyncio.gather(first_event(trigger("ORD-9999")), first_event(trigger("ORD-0055")))
    assert missing["status"] == "error" and missing["error"]["type"] == "PacklyOrderNotFound"
    assert "ORD-9999" in missing["message"]
    assert present["status"] == "success"
    assert book.requests == [0, 1, 2]  # one complete listing answered both


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_each_caller_gets_an_answer_no_older_than_its_own_interval(monkeypatch):
    book = OrderBook(400)
    transport = httpx.MockTransport(book)
    clock = FakeClock()
    monkeypatch.setattr(order_scan.OrderScan, "clock", clock)

    def make_hook() -> PacklyHook:
        return PacklyHook(connection=fake_connection(), async_transport=transport)

    async with order_scan.subscribe("k", make_hook, order_id="ORD-0010", page_size=50) as scan:
        assert (await scan.order("ORD-0010", max_age=30))["id"] == "ORD-0010"
        assert book.requests == [0]  # stopped early: the only order waited for is on page 0
        clock.now += 20
        await scan.order("ORD-0010", max_age=30)  # a 30 s poller takes the 20 s old answer
        assert book.requests == [0]
        await scan.order("ORD-0010", max_age=5)  # a 5 s poller does not
        assert book.requests == [0, 0]
        clock.now += 1
        _, read_at = await scan.read("ORD-0010", max_age=0)  # the final look at a deadline reads anew
        assert book.requests == [0, 0, 0] and read_at == clock.now
        clock.now += 3
        # A poller due 2 s ago (the loop ran it late) with a 1 s interval takes the 3 s old read ...
        assert (await scan.read("ORD-0010", max_age=1, due=clock.now - 2))[1] == read_at
        # ... but never the read it already had.
        await scan.read("ORD-0010", max_age=1, due=clock.now - 2, after=read_at)
        assert book.requests == [0, 0, 0, 0]
        assert scan.stats.scans == 4 and scan.stats.answers == 6 and scan.stats.requests == 4
    assert order_scan.groups_in_running_loop() == {}


@pytest.mark.anyio
async def test_groups_are_per_connection_and_the_hook_is_closed_when_the_last_trigger_leaves(mocker):
    book = OrderBook(10, status="closed")
    hooks: list[PacklyHook] = []
    transport = httpx.MockTransport(book)

    def make(trigger):
        hooks.append(PacklyHook(connection=fake_connection(), async_transport=transport))
        return hooks[-1]

    mocker.patch.object(PacklyOrderStatusTrigger, "_make_hook", make)
    events = await asyncio.gather(
        *(first_event(trigger("ORD-0003", conn=conn)) for conn in ("packly_a", "packly_a", "packly_b"))
    )
    assert [event["status"] for event in events] == ["success"] * 3
    assert len(hooks) == 2  # one group (one hook) per connection
    assert all(hook._aclient is None for hook in hooks)
    assert book.requests == [0, 0]


@pytest.mark.anyio
async def test_the_whole_listing_is_shared_too(mocker):
    book = OrderBook(120)
    transport = httpx.MockTransport(book)

    def make_hook() -> PacklyHook:
        return PacklyHook(connection=fake_connection(), async_transport=transport)

    async with (
        order_scan.subscribe("k", make_hook, order_id=None, page_size=50) as scan,
        order_scan.subscribe("k", make_hook, order_id="ORD-0001", page_size=50) as same,
    ):
        assert scan is same
        listing, one = await asyncio.gather(scan.listing(max_age=5), same.order("ORD-0001", max_age=5))
        assert [o["id"] for o in listing] == [o["id"] for o in book.orders] and one["id"] == "ORD-0001"
        assert book.requests == [0, 1, 2, 3]  # one complete scan for both
        assert await scan.listing(max_age=5) is listing
        assert book.requests == [0, 1, 2, 3]


@pytest.mark.anyio
@pytest.mark.parametrize("missing", [False, True], ids=["answers", "not-found errors"])
async def test_a_thousand_waiters_are_woken_a_batch_per_turn_of_the_loop(missing):
    """Counted, not timed: each woken trigger runs its step in the turn after its answer, so
    1,000 answers set in one turn held the loop (a triggerer's heartbeat, other groups) for that
    whole turn. Every answer and every not-found error is still delivered."""
    book = OrderBook(10, status="closed")
    transport = httpx.MockTransport(book)
    loop = asyncio.get_running_loop()
    turn = 0

    def tick() -> None:  # one call per turn of the loop
        nonlocal turn
        turn += 1
        ticker[0] = loop.call_soon(tick)

    ticker = [loop.call_soon(tick)]
    woken_in: Counter[int] = Counter()
    wanted = "ORD-9999" if missing else "ORD-0005"

    async def ask(scan: order_scan.OrderScan) -> None:
        try:
            await scan.order(wanted, max_age=5)
        except order_scan.PacklyOrderNotFound:
            assert missing
        woken_in[turn] += 1

    def make_hook() -> PacklyHook:
        return PacklyHook(connection=fake_connection(), async_transport=transport)

    try:
        async with order_scan.subscribe("k", make_hook, order_id=wanted, page_size=50) as scan:
            await asyncio.gather(*(ask(scan) for _ in range(1000)))
    finally:
        ticker[0].cancel()
    assert sum(woken_in.values()) == 1000
    assert max(woken_in.values()) <= order_scan.SETTLE_BATCH, woken_in.most_common(3)


@pytest.mark.anyio
async def test_waits_are_all_resolved_even_when_the_scan_is_cancelled_between_batches():
    loop = asyncio.get_running_loop()
    waits = [order_scan._Wait("ORD-0001", 0.0, -1.0, loop.create_future()) for _ in range(3 * order_scan.SETTLE_BATCH)]
    settling = asyncio.create_task(order_scan._settle([(wait, ({"id": "ORD-0001"}, 1.0)) for wait in waits]))
    await asyncio.sleep(0)  # the first batch is resolved, the task waits for the next turn
    assert 0 < sum(wait.future.done() for wait in waits) < len(waits)
    settling.cancel()
    await asyncio.wait([settling])
    assert all(wait.future.result() == ({"id": "ORD-0001"}, 1.0) for wait in waits)


# -- over real loopback HTTP -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_sandbox():
    with run_sandbox(SandboxConfig(order_count=400, order_step_seconds=1e6)) as running:
        yield running


@pytest.mark.integration
@pytest.mark.anyio
async def test_forty_triggers_share_one_scan_of_the_sandbox(big_sandbox, monkeypatch, mocker):
    monkeypatch.setenv("AIRFLOW_CONN_PACKLY_BIG", sandbox_connection_json(big_sandbox.base_url))
    polls = count_polls(mocker)
    numbers = [n for n in range(3, 401, 10) if n % 7][:40]
    before = big_sandbox.state.api_requests[ORDERS_PATH]
    waiting = [trigger(f"ORD-{n:04d}", condition=NEVER, poll_interval=0.2, conn="packly_big") for n in numbers]
    await run_rounds(waiting, polls, rounds=3)
    requests = big_sandbox.state.api_requests[ORDERS_PATH] - before
    assert requests / poll_rounds(polls, waiting) <= 8 + 2
    json.dumps([t.serialize() for t in waiting])  # still plain data
