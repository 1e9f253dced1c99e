"""Token rules and the process-wide cache, without a network (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time
from urllib.parse import parse_qs

import anyio
import httpx
import pytest

from airflow_provider_packly.auth import (
    AccessToken,
    TokenCache,
    TokenSource,
    build_token_request,
    parse_token_response,
)
from airflow_provider_packly.exceptions import PacklyAuthError

from .conftest import CLIENT_ID, CLIENT_SECRET
from .fakes import FakeClock

OPAQUE = "AAAA%2FAAA%3DAAAAAAAA"


def token_response(body: object, status: int = 200, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers={"content-type": content_type})


def test_token_request_matches_the_documented_example(make_connection):
    request = build_token_request(make_connection())
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:8089/v1/oauth2/token"
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert request.headers["accept-encoding"] == "gzip"
    assert parse_qs(request.content.decode()) == {"grant_type": ["client_credentials"], "scope": ["external"]}


@pytest.mark.parametrize("token_type", ["bearer", "Bearer", "BEARER"])
def test_token_type_is_compared_case_insensitively(make_connection, token_type):
    token = parse_token_response(
        make_connection(), token_response({"token_type": token_type, "access_token": OPAQUE, "expires_in": 3600}), 100.0
    )
    assert token.value == OPAQUE
    assert (token.expires_at, token.refresh_at) == (3700.0, 3640.0)


@pytest.mark.parametrize(
    ("expires_in", "lifetime"), [(3600, 3600.0), ("3600", 3600.0), (" 90.5 ", 90.5), (None, 300.0)]
)
def test_expires_in_number_string_or_missing(make_connection, expires_in, lifetime):
    body = {"token_type": "bearer", "access_token": OPAQUE}
    if expires_in is not None:
        body["expires_in"] = expires_in
    assert parse_token_response(make_connection(), token_response(body), 0.0).lifetime == lifetime


def test_short_lifetime_refreshes_half_way_not_before_it_starts(make_connection):
    token = parse_token_response(
        make_connection(token_refresh_margin=60),
        token_response({"token_type": "bearer", "access_token": OPAQUE, "expires_in": 4}),
        10.0,
    )
    assert token.refresh_at == 12.0
    assert not token.needs_refresh(11.9) and token.needs_refresh(12.0)


def test_gzip_token_response_is_decoded(make_connection):
    raw = json.dumps({"token_type": "bearer", "access_token": OPAQUE, "expires_in": 60}).encode()
    response = httpx.Response(
        200, content=gzip.compress(raw), headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert parse_token_response(make_connection(), response, 0.0).value == OPAQUE


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (token_response({"access_token": OPAQUE, "expires_in": 1}), "token_type is missing"),
        (token_response({"token_type": "mac", "access_token": OPAQUE}), "token_type 'mac'; only 'bearer'"),
        (token_response({"token_type": "bearer"}), "access_token is missing"),
        (token_response({"token_type": "bearer", "access_token": ""}), "access_token is empty"),
        (token_response({"token_type": "bearer", "access_token": 42}), "access_token is not a string (int)"),
        (token_response({"token_type": "bearer", "access_token": OPAQUE, "expires_in": -5}), "expires_in is -5"),
        (token_response({"token_type": "bearer", "access_token": OPAQUE, "expires_in": 0}), "more than 0 seconds"),
        (
            token_response({"token_type": "bearer", "access_token": OPAQUE, "expires_in": "soon"}),
            "'soon', not a number",
        ),
        (token_response({"token_type": "bearer", "access_token": OPAQUE, "expires_in": True}), "True, not a number"),
        (token_response(b"<html>login</html>", content_type="text/html"), "was not JSON; check that the Base URL"),
        (token_response(b""), "was not JSON"),
        (token_response([1, 2]), "JSON but not an object (list)"),
        (
            token_response(
                {"response": {"code": "UNAUTHORIZED", "message": "Bad client credentials", "http_status_code": 401}},
                status=401,
            ),
            "HTTP 401, Packly said UNAUTHORIZED: Bad client credentials. Check the connection's client ID",
        ),
        (
            token_response({"error": "invalid_client", "error_description": "unknown client"}, status=400),
            "Packly said invalid_client: unknown client",
        ),
        (
            token_response(b"<h1>502 Bad Gateway</h1>", status=502, content_type="text/html"),
            "HTTP 502; the response body was not JSON (text/html)",
        ),
        (token_response(b'{"response": {"co', status=500), "HTTP 500; the response body was not JSON"),
    ],
)
def test_bad_token_responses_say_what_was_wrong(make_connection, response, expected):
    with pytest.raises(PacklyAuthError) as caught:
        parse_token_response(make_connection(), response, 0.0)
    message = str(caught.value)
    assert expected in message
    assert f"client ID {CLIENT_ID!r} in the sandbox environment" in message
    assert CLIENT_SECRET not in message and OPAQUE not in message


def test_a_token_in_an_unexpected_success_body_is_never_quoted(make_connection):
    body = f"access_token={OPAQUE}&token_type=bearer".encode()
    with pytest.raises(PacklyAuthError) as caught:
        parse_token_response(
            make_connection(), token_response(body, content_type="application/x-www-form-urlencoded"), 0.0
        )
    assert OPAQUE not in str(caught.value)


def test_an_echoed_secret_in_an_error_body_is_redacted(make_connection):
    conn = make_connection()
    basic = build_token_request(conn).headers["authorization"]
    body = f"<html>bad request: Authorization: {basic} secret={CLIENT_SECRET}</html>".encode()
    with pytest.raises(PacklyAuthError) as caught:
        parse_token_response(conn, token_response(body, status=400, content_type="text/html"), 0.0)
    assert CLIENT_SECRET not in str(caught.value)
    assert basic.split()[1] not in str(caught.value)
    assert "***" in str(caught.value)


def test_access_token_repr_is_redacted():
    token = AccessToken(OPAQUE, 60.0, 0.0, 30.0, 60.0)
    assert OPAQUE not in repr(token) and OPAQUE not in str(token)


# -- the cache ------------------------------------------------------------------------------------


#: How long a held answer waits for release() at most: a guard against a hung test, never a
#: measurement (a test that needs it has already failed).
HOLD_LIMIT_SECONDS = 30


class TokenServer:
    """Counts token requests; each issues a distinct token.

    Concurrency tests order events with it, not sleeps: ``arrived`` is set when a request
    arrives, and after :meth:`hold` every answer waits until :meth:`release`.
    """

    def __init__(self, *, expires_in: int = 3600, status: int = 200) -> None:
        self.requests = 0
        self.expires_in = expires_in
        self.status = status
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._lock = threading.Lock()

    def hold(self) -> TokenServer:
        """From now on, answers wait for :meth:`release`."""
        self._released.clear()
        return self

    def release(self) -> None:
        self._released.set()

    async def wait_arrived(self) -> None:
        """Wait (without blocking the event loop) until a request has arrived."""
        assert await anyio.to_thread.run_sync(self.arrived.wait, HOLD_LIMIT_SECONDS), "no token request arrived"

    def _count(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def _answer(self, number: int) -> httpx.Response:
        if self.status != 200:
            return token_response(
                {"response": {"code": "UNAUTHORIZED", "message": "Bad credentials"}}, status=self.status
            )
        return token_response(
            {"token_type": "bearer", "access_token": f"tok-{number}%2F", "expires_in": self.expires_in}
        )

    def send(self, request: httpx.Request) -> httpx.Response:
        number = self._count()
        self.arrived.set()
        self._released.wait(HOLD_LIMIT_SECONDS)
        return self._answer(number)

    async def asend(self, request: httpx.Request) -> httpx.Response:
        number = self._count()
        self.arrived.set()
        await anyio.to_thread.run_sync(self._released.wait, HOLD_LIMIT_SECONDS)
        return self._answer(number)


def source(conn, server: TokenServer, cache: TokenCache, clock=time.monotonic) -> TokenSource:
    return TokenSource(conn, send=server.send, asend=server.asend, cache=cache, clock=clock)


def test_cached_until_refresh_due_then_refetched(make_connection):
    clock, server = FakeClock(), TokenServer(expires_in=100)
    cache = TokenCache(clock=clock)
    tokens = source(make_connection(token_refresh_margin=10), server, cache, clock)
    first = tokens.get()
    clock.now += 89
    assert tokens.get() is first
    clock.now += 1  # 90 s: inside the 10 s margin
    second = tokens.get()
    assert second is not first and second.value == "tok-2%2F"
    assert server.requests == 2


def test_keys_separate_credentials_and_share_equal_ones(make_connection):
    server, cache = TokenServer(), TokenCache()
    a = source(make_connection(), server, cache).get()
    assert source(make_connection(), server, cache).get() is a  # another hook, same credentials
    assert source(make_connection(client_secret="rotated"), server, cache).get() is not a
    assert source(make_connection(base_url="http://127.0.0.1:9999"), server, cache).get() is not a
    assert server.requests == 3


def test_invalidate_drops_only_the_token_that_failed(make_connection):
    server, cache = TokenServer(), TokenCache()
    tokens = source(make_connection(), server, cache)
    old = tokens.get()
    tokens.invalidate(old)
    new = tokens.get()
    tokens.invalidate(old)  # a late 401 for the old token must not evict the new one
    assert tokens.get() is new and server.requests == 2


def test_twenty_threads_on_a_cold_cache_make_one_request(make_connection):
    server, cache = TokenServer().hold(), TokenCache()
    barrier = threading.Barrier(21)
    results: list[str] = []

    def worker() -> None:
        tokens = source(make_connection(), server, cache)  # a hook of its own, as in a real task
        barrier.wait()
        results.append(tokens.get().value)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    barrier.wait()  # every thread is about to ask
    assert server.arrived.wait(HOLD_LIMIT_SECONDS)  # one of them leads the fetch, held open
    server.release()
    for thread in threads:
        thread.join()
    assert server.requests == 1
    assert results == ["tok-1%2F"] * 20


@pytest.mark.anyio
async def test_hundred_coroutines_on_a_cold_cache_make_one_request(make_connection):
    server, cache = TokenServer().hold(), TokenCache()
    tokens = source(make_connection(), server, cache)
    gathered = asyncio.gather(*(tokens.aget() for _ in range(100)))
    await server.wait_arrived()  # all 100 have started (one loop turn) and one leads the fetch
    server.release()
    results = await gathered
    assert server.requests == 1
    assert {token.value for token in results} == {"tok-1%2F"}


@pytest.mark.anyio
async def test_a_failure_is_shared_by_all_concurrent_waiters(make_connection):
    server, cache = TokenServer(status=401).hold(), TokenCache()
    tokens = source(make_connection(), server, cache)
    gathered = asyncio.gather(*(tokens.aget() for _ in range(100)), return_exceptions=True)
    await server.wait_arrived()
    server.release()
    outcomes = await gathered
    assert server.requests == 1
    assert all(isinstance(outcome, PacklyAuthError) for outcome in outcomes)
    assert "Bad credentials" in str(outcomes[0])
    with pytest.raises(PacklyAuthError):  # no failure is cached: the next call asks again
        await tokens.aget()
    assert server.requests == 2


@pytest.mark.anyio
async def test_threads_and_coroutines_on_two_event_loops_share_one_fetch(make_connection):
    server, cache = TokenServer().hold(), TokenCache()
    conn = make_connection()
    other_loop_results: list[str] = []

    def other_thread() -> None:
        async def many() -> list[AccessToken]:
            return await asyncio.gather(*(source(conn, server, cache).aget() for _ in range(10)))

        other_loop_results.extend(token.value for token in asyncio.run(many()))

    thread = threading.Thread(target=other_thread)
    thread.start()
    await server.wait_arrived()  # the other loop leads the fetch, held open
    here = asyncio.gather(*(source(conn, server, cache).aget() for _ in range(10)))
    blocking = asyncio.ensure_future(asyncio.to_thread(source(conn, server, cache).get))
    await asyncio.sleep(0)  # let them start asking
    server.release()
    here, blocking = await here, await blocking
    thread.join()
    assert server.requests == 1
    assert {t.value for t in here} | set(other_loop_results) | {blocking.value} == {"tok-1%2F"}


@pytest.mark.anyio
async def test_a_cancelled_leader_hands_over_to_a_waiter(make_connection):
    server, cache = TokenServer().hold(), TokenCache()
    tokens = source(make_connection(), server, cache)
    leader = asyncio.ensure_future(tokens.aget())
    await server.wait_arrived()  # the leader's fetch is in flight, held open
    waiter = asyncio.ensure_future(tokens.aget())
    await asyncio.sleep(0)  # the waiter joins the flight
    leader.cancel()
    server.release()
    token = await asyncio.wait_for(waiter, timeout=HOLD_LIMIT_SECONDS)
    assert token.value == "tok-2%2F"  # the waiter fetched anew instead of failing or hanging
    assert leader.cancelled()


@pytest.mark.anyio
async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(make_connection):
    server, cache = TokenServer().hold(), TokenCache()
    tokens = source(make_connection(), server, cache)
    leader = asyncio.ensure_future(tokens.aget())
    await server.wait_arrived()  # the leader's fetch is in flight, held open
    waiter = asyncio.ensure_future(tokens.aget())
    await asyncio.sleep(0)  # the waiter joins the flight
    waiter.cancel()
    server.release()
    assert (await leader).value == "tok-1%2F"
    assert server.requests == 1


@pytest.mark.anyio
async def test_inside_the_margin_callers_keep_the_old_token_while_one_refreshes(make_connection):
    clock, server = FakeClock(), TokenServer(expires_in=100)
    cache = TokenCache(clock=clock)
    tokens = source(make_connection(token_refresh_margin=10), server, cache, clock)
    old = await tokens.aget()
    clock.now += 95  # due for refresh, not yet expired
    server.hold()
    server.arrived.clear()
    refresher = asyncio.ensure_future(tokens.aget())
    await server.wait_arrived()  # the refresh is in flight, and stays so until released
    # Answered while the refresh is still held: had it waited for the refresh, it would never
    # return before the release below (the guard turns that hang into a failure).
    with anyio.fail_after(HOLD_LIMIT_SECONDS / 3):
        assert (await tokens.aget()) is old
    assert not refresher.done()
    server.release()
    assert (await refresher).value == "tok-2%2F"
    assert server.requests == 2
