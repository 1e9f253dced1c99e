"""Every call ends by its overall deadline, over real loopback HTTP, sync and async.

httpx's timeouts bound each read: a server that trickles a byte per read, or never ends a
chunked body, is never cut by them. These servers would hold a call for a minute or forever;
each test gives the call a 1 s deadline and checks that it ends with the deadline error well
within 5 s (a correctness bound with a wide margin, not a performance measurement).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook

from ..loopback import endless, http_response, loopback_server, token_answer, token_then, trickle

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ORDERS = "/v1/reseller/orders"
#: A call given a 1 s deadline must have ended by then; 5 s leaves room for a loaded machine.
BOUND = 5.0
DEADLINE_SAYS = "did not finish within its overall deadline of 1 s"
JSON = {"Content-Type": "application/json"}


def connection(server, **overrides) -> PacklyConnection:
    settings = {
        "client_id": "hostile-client",
        "client_secret": "hostile-secret-Zx9",
        "base_url": server.base_url,
        "timeout": 5,
        "request_deadline_seconds": 1,
        "retry_backoff_seconds": 0.01,
    }
    settings.update(overrides)
    return PacklyConnection(**settings)


def timed(call):
    started = time.monotonic()
    with pytest.raises(PacklyError) as caught:
        call()
    return time.monotonic() - started, caught.value


async def atimed(call):
    started = time.monotonic()
    with pytest.raises(PacklyError) as caught:
        await call()
    return time.monotonic() - started, caught.value


SLOW_TOKEN = trickle(token_answer(), every=0.2, head_at_once=True)  # about 20 s for the whole token response


def test_a_trickling_token_endpoint_is_cut_at_the_deadline_for_the_leader_and_every_waiter():
    with loopback_server(token_then(http_response(200, b"[]", JSON), token=SLOW_TOKEN)) as server:
        settings = connection(server)
        outcomes: list[tuple[float, BaseException]] = []

        def caller() -> None:
            with PacklyHook(connection=settings) as hook:
                outcomes.append(timed(hook.get_token))

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(outcomes) == 4
    for seconds, error in outcomes:
        assert seconds < BOUND
        # The leader's own deadline error, or a waiter's bound on waiting for it: both say how to fix it.
        assert isinstance(error, PacklyTransportError) and "request_deadline_seconds" in str(error)
    assert any(DEADLINE_SAYS in str(error) for _, error in outcomes)
    assert server.calls.count(("POST", "/v1/oauth2/token")) == 1  # the waiters shared the leader's fetch


async def test_a_trickling_token_endpoint_is_cut_at_the_deadline_async():
    with loopback_server(token_then(http_response(200, b"[]", JSON), token=SLOW_TOKEN)) as server:
        async with PacklyHook(connection=connection(server)) as hook:
            results = await asyncio.gather(*(atimed(lambda: hook.arequest("GET", ORDERS)) for _ in range(4)))
    for seconds, error in results:
        assert seconds < BOUND
        assert isinstance(error, PacklyTransportError) and "request_deadline_seconds" in str(error)
    assert any(DEADLINE_SAYS in str(error) for _, error in results)


def test_a_trickling_api_answer_is_cut_at_the_deadline():
    with (
        loopback_server(
            token_then(trickle(http_response(200, b'{"response": []}' * 10, JSON), every=0.1, head_at_once=True))
        ) as server,
        PacklyHook(connection=connection(server)) as hook,
    ):
        seconds, error = timed(lambda: hook.request("GET", ORDERS))
    assert seconds < BOUND and DEADLINE_SAYS in str(error)
    assert f"GET {server.base_url}{ORDERS}" in str(error)


def test_an_endless_chunked_answer_is_cut_at_the_deadline():
    with loopback_server(token_then(endless())) as server, PacklyHook(connection=connection(server)) as hook:
        seconds, error = timed(lambda: hook.request("GET", ORDERS))
    assert seconds < BOUND and isinstance(error, PacklyTransportError) and DEADLINE_SAYS in str(error)


async def test_an_endless_chunked_answer_is_cut_at_the_deadline_async():
    with loopback_server(token_then(endless())) as server:
        async with PacklyHook(connection=connection(server)) as hook:
            seconds, error = await atimed(lambda: hook.arequest("GET", ORDERS))
    assert seconds < BOUND and isinstance(error, PacklyTransportError) and DEADLINE_SAYS in str(error)


def test_an_endless_streamed_answer_is_cut_while_it_is_read():
    """``stream()`` (the dieline operator's path): the caller reads; the deadline still holds."""
    with loopback_server(token_then(endless())) as server, PacklyHook(connection=connection(server)) as hook:

        def read_all() -> None:
            with hook.stream("GET", ORDERS) as response:
                for _ in response.iter_bytes():
                    pass

        seconds, error = timed(read_all)
    assert seconds < BOUND and DEADLINE_SAYS in str(error)


async def test_an_endless_streamed_answer_is_cut_while_it_is_read_async():
    with loopback_server(token_then(endless())) as server:
        async with PacklyHook(connection=connection(server)) as hook:

            async def read_all() -> None:
                async with hook.astream("GET", ORDERS) as response:
                    async for _ in response.aiter_bytes():
                        pass

            seconds, error = await atimed(read_all)
    assert seconds < BOUND and DEADLINE_SAYS in str(error)


def test_the_default_deadline_follows_the_timeouts():
    """Unset, the deadline is the retry budget plus each phase timeout once: 0.5 + 4 x 0.2 = 1.3 s."""
    with loopback_server(token_then(endless())) as server:
        settings = connection(server, request_deadline_seconds=None, timeout=0.2, retry_max_seconds=0.5)
        assert settings.request_deadline() == pytest.approx(1.3)
        with PacklyHook(connection=settings) as hook:
            seconds, error = timed(lambda: hook.request("GET", ORDERS))
    assert seconds < BOUND and "overall deadline of 1.3 s" in str(error)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_no_retry_is_waited_for_past_the_deadline(use_async):
    """A 503 asking to come back in 3 s, under a 1 s deadline: answered now, not resent."""
    busy = http_response(503, b'{"response": {"code": "BUSY", "message": "later"}}', {**JSON, "Retry-After": "3"})
    with loopback_server(token_then(busy)) as server:
        hook = PacklyHook(connection=connection(server, retry_after_max_seconds=10))
        started = time.monotonic()
        with pytest.raises(PacklyAPIError) as caught:
            if use_async:

                async def call() -> None:
                    async with hook:
                        await hook.arequest("GET", ORDERS)

                asyncio.run(call())
            else:
                with hook:
                    hook.request("GET", ORDERS)
        seconds = time.monotonic() - started
    assert caught.value.http_status == 503
    assert seconds < 1.0 + BOUND - 1  # never slept the 3 s
    assert server.calls.count(("GET", ORDERS)) == 1
