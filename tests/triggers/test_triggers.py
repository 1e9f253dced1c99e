"""PacklyOrderStatusTrigger and PacklyWaitTrigger: serialization, deadlines, one event, GET only."""

from __future__ import annotations

import datetime as dt
import importlib
import json

import httpx
import pytest

from airflow_provider_packly.exceptions import PacklyAPIError
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger, PacklyWaitTrigger
from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after, error_from_payload, parse_deadline

from ..fakes import SECRET, TOKEN, FakePackly, envelope, order, page, sandbox_connection_json

CLOSED = OrderCondition("order_status", ("closed",), ("canceled", "deleted")).to_dict()
SHIPPED = OrderCondition("products_status", ("shipped",), ("canceled", "deleted")).to_dict()


def recreate(trigger):
    """What the triggerer does: import the classpath, call it with the kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


async def collect(trigger) -> list[dict]:
    """Every event the trigger yields, running it to its end."""
    return [event.payload async for event in trigger.run()]


def order_trigger(**overrides) -> PacklyOrderStatusTrigger:
    settings = {
        "order_id": "ORD-0001",
        "condition": CLOSED,
        "deadline": deadline_after(60),
        "packly_conn_id": "packly_default",
        "poll_interval": 0.01,
    }
    settings.update(overrides)
    return PacklyOrderStatusTrigger(**settings)


def use_fake(mocker, fake: FakePackly, **settings) -> None:
    mocker.patch.object(PacklyOrderStatusTrigger, "_make_hook", lambda self: fake.hook(**settings))


# -- serialization ------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", [CLOSED, SHIPPED])
def test_order_trigger_round_trips_through_serialize(condition):
    trigger = order_trigger(condition=condition, poll_interval=5, page_size=20)
    again = recreate(trigger)
    assert type(again) is PacklyOrderStatusTrigger
    assert again.serialize() == trigger.serialize()
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_packly.triggers.packly.PacklyOrderStatusTrigger"
    assert set(kwargs) == {"order_id", "condition", "deadline", "packly_conn_id", "poll_interval", "page_size"}


def test_wait_trigger_round_trips_through_serialize():
    trigger = PacklyWaitTrigger.after(30, deadline=deadline_after(60))
    assert recreate(trigger).serialize() == trigger.serialize()


def test_payload_is_plain_json_without_secrets(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PACKLY_DEFAULT", sandbox_connection_json("http://127.0.0.1:8089"))
    for trigger in (order_trigger(), PacklyWaitTrigger.after(5, deadline=deadline_after(60))):
        _, kwargs = trigger.serialize()
        text = json.dumps(kwargs)  # raises if anything is not plain data
        assert json.loads(text) == kwargs
        for secret in ("sandbox-client-secret", SECRET, TOKEN, "password", "Bearer"):
            assert secret not in text


def test_deadline_survives_a_recreated_trigger():
    deadline = deadline_after(3600)
    first = order_trigger(deadline=deadline)
    # The triggerer restarts later and re-creates the trigger from the database row.
    again = recreate(recreate(first))
    assert again.deadline == first.deadline
    assert parse_deadline(again.deadline) == parse_deadline(deadline)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"order_id": ""}, "order_id"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"deadline": "2026-01-01T00:00:00"}, "UTC offset"),
        ({"condition": {"kind": "order_status", "target_statuses": ["done"]}}, "unknown status"),
        ({"page_size": 0}, "page_size"),
    ],
)
def test_order_trigger_checks_its_arguments(overrides, error):
    with pytest.raises(ValueError, match=error):
        order_trigger(**overrides)


# -- run() with a scripted Packly ------------------------------------------------------------------


@pytest.mark.anyio
async def test_transient_errors_are_polled_through(mocker):
    fake = FakePackly(
        envelope(503, "INTERNAL_SERVER_ERROR", "try later"),
        httpx.Response(502, text="<html>bad gateway</html>", headers={"content-type": "text/html"}),
        page(order("ORD-0001", "paid")),
        page(order("ORD-0001", "closed")),
    )
    use_fake(mocker, fake)
    events = await collect(order_trigger())
    assert len(events) == 1
    assert events[0]["status"] == "success" and events[0]["order_status"] == "closed"
    assert len(fake.calls) == 4


@pytest.mark.anyio
async def test_hook_retries_and_trigger_polling_work_together(mocker):
    fake = FakePackly(envelope(503, "INTERNAL_SERVER_ERROR", "try later"), page(order("ORD-0001", "closed")))
    use_fake(mocker, fake, retry_max_attempts=3, retry_backoff_seconds=0.01)
    events = await collect(order_trigger())
    assert [e["status"] for e in events] == ["success"]
    assert len(fake.calls) == 2


@pytest.mark.anyio
async def test_transport_errors_are_polled_through(mocker):
    answers = iter([httpx.ConnectError("refused"), page(order("ORD-0001", "closed"))])

    def flaky(request):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    fake = FakePackly(flaky)
    use_fake(mocker, fake)
    events = await collect(order_trigger())
    assert [e["status"] for e in events] == ["success"]


@pytest.mark.anyio
async def test_only_get_requests_reach_packly(mocker):
    fake = FakePackly(
        page(order("ORD-0001", "paid")), page(order("ORD-0001", "in_processing")), page(order("ORD-0001", "closed"))
    )
    use_fake(mocker, fake)
    await collect(order_trigger())
    assert fake.api_methods == {"GET"}
    assert {path for _, path, _ in fake.calls} == {"/v1/reseller/orders"}
    assert fake.token_requests == 1  # the one POST, to the token endpoint, changes no Packly state


@pytest.mark.anyio
async def test_permanent_error_ends_with_error_event(mocker):
    fake = FakePackly(envelope(404, "NOT_FOUND", "No such resource"))
    use_fake(mocker, fake)
    events = await collect(order_trigger())
    assert [e["status"] for e in events] == ["error"]
    assert len(fake.calls) == 1
    error = error_from_payload(events[0]["error"])
    assert isinstance(error, PacklyAPIError) and error.http_status == 404 and error.code == "NOT_FOUND"
    assert events[0]["message"] == str(error)


@pytest.mark.anyio
async def test_still_waiting_at_the_deadline_yields_timeout_with_last_status(mocker):
    fake = FakePackly(page(order("ORD-0001", "paid")))
    use_fake(mocker, fake)
    # Long enough for the first poll to finish on a loaded machine (0.3 s was not, in CI):
    # a poll cut by the deadline rightly reports no status.
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)).isoformat()
    events = await collect(order_trigger(deadline=soon, poll_interval=0.05))
    assert [e["status"] for e in events] == ["timeout"]
    assert events[0]["order_status"] == "paid"
    assert "Last status seen: 'paid'" in events[0]["message"]
    assert len(fake.calls) >= 1


@pytest.mark.anyio
async def test_unexpected_answer_ends_with_error_not_a_crash(mocker):
    fake = FakePackly(httpx.Response(200, json={"unexpected": True}))
    use_fake(mocker, fake)
    events = await collect(order_trigger())
    assert [e["status"] for e in events] == ["error"]
    assert "no response list" in events[0]["message"]


@pytest.mark.anyio
async def test_hook_is_closed_after_the_event(mocker):
    fake = FakePackly(page(order("ORD-0001", "closed")))
    hooks = []

    def make(self):
        hooks.append(fake.hook())
        return hooks[-1]

    mocker.patch.object(PacklyOrderStatusTrigger, "_make_hook", make)
    generator = order_trigger().run()
    event = await generator.__anext__()  # the triggerer takes the first event ...
    assert event.payload["status"] == "success"
    assert hooks[0]._aclient is None  # ... and the hook was closed before it was yielded
    await generator.aclose()


@pytest.mark.anyio
async def test_wait_trigger_wakes_and_echoes_its_deadline():
    deadline = deadline_after(60)
    events = await collect(PacklyWaitTrigger.after(0.01, deadline=deadline))
    assert events == [
        {"status": "success", "message": "Time to poke again.", "deadline": parse_deadline(deadline).isoformat()}
    ]


@pytest.mark.anyio
async def test_wait_trigger_never_sleeps_past_the_deadline():
    trigger = PacklyWaitTrigger.after(3600, deadline=deadline_after(1.0))
    assert trigger.wake_at == trigger.deadline
    events = await collect(trigger)
    assert [e["status"] for e in events] == ["success"]  # time to poke once more; the sensor then times out


@pytest.mark.anyio
async def test_wait_trigger_past_deadline_yields_timeout():
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
    events = await collect(recreate(PacklyWaitTrigger(wake_at=past, deadline=past)))
    assert [e["status"] for e in events] == ["timeout"]


# -- run() against the sandbox on real loopback HTTP -------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    with run_sandbox(SandboxConfig(order_step_seconds=0.2)) as running:
        yield running


@pytest.fixture
def sandbox_conn(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PACKLY_SANDBOX", sandbox_connection_json(sandbox.base_url))
    sandbox.state.reset_clock()
    return "packly_sandbox"


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("order_id", "condition", "status", "last"),
    [
        ("ORD-0001", CLOSED, "success", "closed"),  # closes after 4 steps
        ("ORD-0001", SHIPPED, "success", "closed"),  # every product shipped once closed
        ("ORD-0007", CLOSED, "failed", "canceled"),  # canceled after 2 steps
        ("ORD-0002", CLOSED, "failed", "deleted"),  # deleted from the start
    ],
)
async def test_trigger_against_the_sandbox(sandbox, sandbox_conn, order_id, condition, status, last):
    before = sandbox.state.api_requests["/v1/reseller/orders"]
    trigger = recreate(
        order_trigger(order_id=order_id, condition=condition, packly_conn_id=sandbox_conn, poll_interval=0.1)
    )
    events = await collect(trigger)
    assert len(events) == 1
    assert events[0]["status"] == status
    assert events[0]["order_id"] == order_id and events[0]["order_status"] == last
    assert sandbox.state.api_requests["/v1/reseller/orders"] > before
    json.dumps(events[0])


@pytest.mark.integration
@pytest.mark.anyio
async def test_unknown_order_in_the_sandbox_is_an_error(sandbox, sandbox_conn):
    events = await collect(order_trigger(order_id="ORD-9999", packly_conn_id=sandbox_conn))
    assert [e["status"] for e in events] == ["error"]
    assert events[0]["error"]["type"] == "PacklyOrderNotFound"
    assert "ORD-9999" in events[0]["message"]


@pytest.mark.anyio
async def test_polls_in_flight_are_bounded_per_event_loop(mocker):
    import asyncio

    from ..fakes import TOKEN_PATH, fake_connection

    in_flight = 0
    most = 0
    bound_reached = asyncio.Event()

    async def held_packly(request: httpx.Request) -> httpx.Response:
        # Each poll is held until two are in flight at once (the bound), then for some loop
        # turns (not time) in which a poll over the bound would arrive and be counted.
        nonlocal in_flight, most
        if request.url.path == TOKEN_PATH:
            return httpx.Response(200, json={"token_type": "bearer", "access_token": "t", "expires_in": 3600})
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 2:
            bound_reached.set()
        await asyncio.wait_for(bound_reached.wait(), timeout=30)
        for _ in range(50):
            await asyncio.sleep(0)
        in_flight -= 1
        return page(order("ORD-0001", "closed"))

    from airflow_provider_packly.hooks.packly import PacklyHook

    mocker.patch.object(
        PacklyOrderStatusTrigger,
        "_make_hook",
        lambda self: PacklyHook(connection=fake_connection(), async_transport=httpx.MockTransport(held_packly)),
    )
    mocker.patch.object(PacklyOrderStatusTrigger, "max_polls_in_flight", 2)
    # Six connections: six scan groups (one connection's triggers share one scan, one request at a time).
    results = await asyncio.gather(*(collect(order_trigger(packly_conn_id=f"packly_{i}")) for i in range(6)))
    assert [events[0]["status"] for events in results] == ["success"] * 6
    assert most == 2
