"""PacklyOrderEventTrigger: events per order transition, the watermark, restarts, shared polls."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging

import anyio
import httpx
import pytest

from airflow_provider_packly.exceptions import PacklyValidationError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.triggers import order_scan
from airflow_provider_packly.triggers.order_events import PacklyOrderEventTrigger, _pack, order_events

from .fakes import fake_connection, order
from .test_order_scan import OrderBook


class FakeStore:
    """An asset state store (``aget``/``aset`` as ``AssetStateStoreAccessors`` has them)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.writes = 0
        self.written = asyncio.Event()

    async def aget(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)

    async def aset(self, key: str, value: object) -> None:
        json.dumps(value)  # JSON, as the store requires
        self.values[key] = value
        self.writes += 1
        self.written.set()


def use_book(mocker, book: OrderBook) -> None:
    transport = httpx.MockTransport(book)
    mocker.patch.object(
        PacklyOrderEventTrigger,
        "_make_hook",
        classmethod(lambda cls, conn_id: PacklyHook(connection=fake_connection(), async_transport=transport)),
    )


def recreate(trigger: PacklyOrderEventTrigger, store: FakeStore | None) -> PacklyOrderEventTrigger:
    """What a (restarted) triggerer does: the class from its path, the kwargs, then the store."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    if store is not None:
        again.asset_state_store = store
    return again


class Watching:
    """Runs a trigger in a task; its events arrive in ``queue``."""

    def __init__(self, trigger: PacklyOrderEventTrigger) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(trigger))

    async def _run(self, trigger: PacklyOrderEventTrigger) -> None:
        async for event in trigger.run():
            await self.queue.put(event.payload)

    async def next(self) -> dict:
        """The next event; a test that waits for one in vain fails instead of hanging."""
        with anyio.fail_after(30):
            return await self.queue.get()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])


async def written(store: FakeStore) -> None:
    await within(store.written.wait())


async def within(awaitable, seconds: float = 30):
    with anyio.fail_after(seconds):
        return await awaitable


async def scans_done(book: OrderBook, count: int) -> None:
    """Wait until ``count`` more complete listings (page 0 requests) were read."""
    target = book.requests.count(0) + count
    with anyio.fail_after(30):
        while book.requests.count(0) < target:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)  # the last listing's page(s) read and handed on


# -- the pure rule --------------------------------------------------------------------------------


def test_the_first_look_is_the_baseline_and_each_transition_fires_once():
    first = [order("A", "paid"), order("B", "closed")]
    events, known = order_events(first, None, mode="status", statuses=("closed",))
    assert events == [] and known == {"B": "closed"}
    second = [order("A", "closed"), order("B", "closed")]
    events, known = order_events(second, known, mode="status", statuses=("closed",))
    assert [(e["order_id"], e["previous_status"], e["order"]["status"]) for e in events] == [("A", None, "closed")]
    assert order_events(second, known, mode="status", statuses=("closed",))[0] == []  # no repeat
    # An order that leaves the watched statuses and comes back is a new transition.
    _, known = order_events([order("A", "in_processing")], known, mode="status", statuses=("closed",))
    assert len(order_events([order("A", "closed")], known, mode="status", statuses=("closed",))[0]) == 1


def test_new_orders_mode_and_emit_existing():
    events, known = order_events([order("A", "paid")], None, mode="new", emit_existing=True)
    assert [e["order_id"] for e in events] == ["A"] and events[0]["reason"] == "new"
    events, _ = order_events([order("B", "pending_payment"), order("A", "closed")], known, mode="new")
    assert [e["order_id"] for e in events] == ["B"]


def test_the_watermark_of_ten_thousand_orders_stays_small():
    packed = _pack({f"ORD-{n:05d}": "closed" for n in range(10_000)})
    assert len(json.dumps(packed)) < 65_535  # Airflow's default max_value_storage_bytes


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"mode": "status"}, "at least one status"),
        ({"mode": "new", "statuses": ["closed"]}, "leave statuses empty"),
        ({"mode": "sometimes", "statuses": ["closed"]}, "mode must be"),
        ({"statuses": ["done"]}, "unknown status"),
        ({"statuses": ["closed"], "poll_interval": 0}, "poll_interval"),
    ],
)
def test_arguments_are_checked(kwargs, error):
    with pytest.raises(PacklyValidationError, match=error):
        PacklyOrderEventTrigger(**kwargs)


def test_serialize_is_plain_data_and_round_trips():
    trigger = PacklyOrderEventTrigger(statuses="closed", packly_conn_id="packly_x", poll_interval=5)
    again = recreate(trigger, None)
    assert again.serialize() == trigger.serialize()
    assert trigger.serialize()[0] == "airflow_provider_packly.triggers.order_events.PacklyOrderEventTrigger"
    assert again.shared_stream_key() == trigger.shared_stream_key()
    assert (
        PacklyOrderEventTrigger(statuses="closed", poll_interval=6).shared_stream_key() != trigger.shared_stream_key()
    )


# -- driving the trigger --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_status_events_once_per_transition_also_across_a_triggerer_restart(mocker):
    book = OrderBook(60)
    book.orders[2]["status"] = "closed"  # ORD-0003: closed before anyone looked
    use_book(mocker, book)
    store = FakeStore()
    first = recreate(PacklyOrderEventTrigger(statuses=["closed"], poll_interval=0.02), store)
    watching = Watching(first)
    await store.written.wait()  # the baseline is stored
    book.orders[9]["status"] = "closed"
    book.orders[54]["status"] = "closed"
    got = [await watching.queue.get(), await watching.queue.get()]
    assert sorted(e["order_id"] for e in got) == ["ORD-0010", "ORD-0055"]
    assert all(e["status"] == "closed" and e["previous_status"] is None and e["reason"] == "status" for e in got)
    assert got[0]["order"]["id"] == got[0]["order_id"] and got[0]["packly_conn_id"] == "packly_default"
    await scans_done(book, 3)
    assert watching.queue.empty()  # nothing twice
    await watching.stop()

    book.orders[19]["status"] = "closed"  # while no triggerer was looking
    restarted = Watching(recreate(first, store))
    event = await restarted.queue.get()
    assert event["order_id"] == "ORD-0020"
    await scans_done(book, 3)
    assert restarted.queue.empty()  # ORD-0003, ORD-0010 and ORD-0055 were not sent again
    await restarted.stop()
    assert order_scan.groups_in_running_loop() == {}


@pytest.mark.anyio
async def test_without_an_asset_state_store_a_restart_takes_a_new_baseline(mocker):
    """Airflow 3.2 (no asset state store): no duplicates, but changes while down are missed."""
    book = OrderBook(30)
    use_book(mocker, book)
    first = recreate(PacklyOrderEventTrigger(statuses=["closed"], poll_interval=0.02), None)
    assert getattr(first, "asset_state_store", None) is None
    watching = Watching(first)
    await scans_done(book, 1)
    book.orders[4]["status"] = "closed"
    assert (await watching.queue.get())["order_id"] == "ORD-0005"
    await watching.stop()

    book.orders[6]["status"] = "closed"  # while down
    restarted = Watching(recreate(first, None))
    await scans_done(book, 2)
    book.orders[8]["status"] = "closed"
    assert (await restarted.queue.get())["order_id"] == "ORD-0009"  # not ORD-0005 again, not ORD-0007
    await restarted.stop()


@pytest.mark.anyio
async def test_new_orders_fire_with_the_order_as_payload(mocker):
    book = OrderBook(10)
    use_book(mocker, book)
    store = FakeStore()
    watching = Watching(recreate(PacklyOrderEventTrigger(mode="new", poll_interval=0.02), store))
    await store.written.wait()
    book.orders.insert(0, order("ORD-0011", "waiting_execute_payment"))
    event = await watching.queue.get()
    assert event["order_id"] == "ORD-0011" and event["reason"] == "new"
    assert event["order"] == order("ORD-0011", "waiting_execute_payment")
    await watching.stop()


@pytest.mark.anyio
async def test_watchers_on_one_connection_share_one_poll(mocker):
    book = OrderBook(120)
    use_book(mocker, book)
    listings = mocker.spy(order_scan.OrderScan, "listing")
    watchers = [
        PacklyOrderEventTrigger(statuses=["closed"], poll_interval=0.05),
        PacklyOrderEventTrigger(statuses=["paid", "closed"], poll_interval=0.05),
        PacklyOrderEventTrigger(mode="new", poll_interval=0.05),
        PacklyOrderEventTrigger(statuses=["canceled"], poll_interval=0.05),
    ]
    running = [Watching(w) for w in watchers]
    with anyio.fail_after(30):
        while listings.call_count < 5 * len(watchers):
            await asyncio.sleep(0.01)
    for watching in running:
        await watching.stop()
    polls_each = listings.call_count / len(watchers)
    assert book.requests.count(0) <= polls_each + 1  # one scan per poll, not one per watcher


@pytest.mark.anyio
async def test_a_missing_connection_is_waited_for_with_a_warning(caplog):
    watching = Watching(
        PacklyOrderEventTrigger(statuses=["closed"], packly_conn_id="packly_nowhere", poll_interval=0.01)
    )
    with caplog.at_level(logging.WARNING), anyio.fail_after(30):
        while "does not exist" not in caplog.text:
            await asyncio.sleep(0.01)
    assert not watching.task.done()  # still waiting for the connection, not failed
    await watching.stop()
    assert "packly_nowhere" in caplog.text


@pytest.mark.anyio
async def test_the_shared_stream_path_of_airflow_3_3(mocker):
    shared_stream = pytest.importorskip("airflow.triggers.shared_stream")
    book = OrderBook(60)
    use_book(mocker, book)
    manager = shared_stream.SharedStreamManager()
    stores = [FakeStore(), FakeStore()]
    watchers = [
        recreate(PacklyOrderEventTrigger(statuses=["closed"], poll_interval=0.02), stores[0]),
        recreate(PacklyOrderEventTrigger(statuses=["closed"], poll_interval=0.02), stores[1]),
    ]
    assert watchers[0].shared_stream_key() == watchers[1].shared_stream_key()
    queues: list[asyncio.Queue[dict]] = [asyncio.Queue(), asyncio.Queue()]

    async def consume(index: int) -> None:
        watcher = watchers[index]
        stream = manager.subscribe(trigger_id=index, trigger=watcher, key=watcher.shared_stream_key())
        async for event in watcher.filter_shared_stream(stream):
            await queues[index].put(event.payload)

    tasks = [asyncio.create_task(consume(i)) for i in range(2)]
    for store in stores:
        await store.written.wait()
    book.orders[29]["status"] = "closed"
    assert [(await q.get())["order_id"] for q in queues] == ["ORD-0030", "ORD-0030"]
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for index, watcher in enumerate(watchers):
        await manager.unsubscribe(index, watcher.shared_stream_key())
    await manager.stop_all()
