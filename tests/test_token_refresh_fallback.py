"""A failed early refresh keeps the still-valid token in use (issue 9, item 9).

A token is refreshed ``refresh_margin_seconds`` seconds before it expires. If the token
endpoint fails then, the cached token is still good: calls go on with it, a warning says so,
and the next refresh is tried by one caller only, after a back-off. Only once the token has
expired does a failing token endpoint fail calls. Tested on a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest

from airflow_provider_packly._http.retrying import acall, call
from airflow_provider_packly.auth import TokenCache, TokenSource
from airflow_provider_packly.exceptions import PacklyAuthError
from airflow_provider_packly.retries import RetryPolicy

from .conftest import CLIENT_SECRET
from .fakes import FakeClock
from .test_auth import HOLD_LIMIT_SECONDS, TokenServer

LIFETIME = 1000  # seconds; with a 60 s margin the refresh is due at 940 s


class Endpoint(TokenServer):
    """The token endpoint, sent through the real retry policy (5 attempts, no waiting)."""

    def __init__(self) -> None:
        super().__init__(expires_in=LIFETIME)
        self.policy = RetryPolicy(max_attempts=5, backoff=0)

    def fail(self, status: int = 503) -> None:
        self.status = status

    def heal(self) -> None:
        self.status = 200

    def _answer(self, number: int) -> httpx.Response:
        if self.status == 503:
            return httpx.Response(503, json={"response": {"code": "SERVICE_UNAVAILABLE", "message": "down"}})
        return super()._answer(number)

    def sync_send(self, request: httpx.Request) -> httpx.Response:
        response = call(self.policy, self.send, request)
        response.request = request
        return response

    async def async_send(self, request: httpx.Request) -> httpx.Response:
        response = await acall(self.policy, self.asend, request)
        response.request = request
        return response


@pytest.fixture
def setup(make_connection):
    clock, endpoint = FakeClock(), Endpoint()
    cache = TokenCache(clock=clock)
    tokens = TokenSource(
        make_connection(token_refresh_margin=60),
        send=endpoint.sync_send,
        asend=endpoint.async_send,
        cache=cache,
        clock=clock,
    )
    return clock, endpoint, tokens


def test_the_valid_token_is_used_when_the_early_refresh_fails(setup, caplog):
    clock, endpoint, tokens = setup
    first = tokens.get()
    endpoint.fail()
    clock.now += 945  # due for refresh, 55 s before expiry
    with caplog.at_level(logging.WARNING, logger="airflow_provider_packly.auth"):
        assert tokens.get() is first  # no error
    assert endpoint.requests == 2  # one attempt for the refresh, not the policy's five
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "still valid for 55 s" in warnings[0] and "next refresh attempt in 5 s" in warnings[0]
    assert "test-client-id" in warnings[0] and "503" in warnings[0]
    assert first.value not in warnings[0] and CLIENT_SECRET not in warnings[0]


def test_after_a_failed_refresh_the_next_attempt_waits_for_a_back_off(setup):
    clock, endpoint, tokens = setup
    first = tokens.get()
    endpoint.fail()
    clock.now += 945
    assert tokens.get() is first
    assert endpoint.requests == 2
    for _ in range(50):  # every call within the back-off: no request at all
        assert tokens.get() is first
    clock.now += 4.9
    assert tokens.get() is first and endpoint.requests == 2
    clock.now += 0.1  # 5 s later: one new attempt, which fails too
    assert tokens.get() is first and endpoint.requests == 3
    clock.now += 5  # the back-off doubled to 10 s
    assert tokens.get() is first and endpoint.requests == 3
    endpoint.heal()
    clock.now += 5
    second = tokens.get()
    assert second is not first and second.value == "tok-4%2F" and endpoint.requests == 4
    endpoint.fail()
    clock.now += 940  # the new token's refresh fails: the back-off starts again at 5 s
    assert tokens.get() is second and endpoint.requests == 5
    clock.now += 5
    assert tokens.get() is second and endpoint.requests == 6


def test_once_the_token_has_expired_a_failing_endpoint_fails_the_call(setup):
    clock, endpoint, tokens = setup
    tokens.get()
    endpoint.fail()
    clock.now += 945
    tokens.get()
    clock.now += 55  # expired
    with pytest.raises(PacklyAuthError, match="HTTP 503 after 5 attempts"):
        tokens.get()  # a cold fetch: the retry policy's attempts, then the error
    assert endpoint.requests == 2 + 5


def test_a_credentials_rejection_during_the_margin_also_keeps_the_valid_token(setup):
    clock, endpoint, tokens = setup
    first = tokens.get()
    endpoint.fail(401)
    clock.now += 945
    assert tokens.get() is first


def test_only_one_of_many_threads_tries_the_refresh(setup):
    clock, endpoint, tokens = setup
    first = tokens.get()
    endpoint.fail()
    endpoint.hold()  # the one refresh stays in flight until released
    clock.now += 945
    barrier = threading.Barrier(20)
    got: list[object] = []
    answered = threading.Semaphore(0)

    def call() -> None:
        barrier.wait()
        got.append(tokens.get())
        answered.release()

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    # The 19 that do not refresh are answered while the refresh is still held.
    assert all(answered.acquire(timeout=HOLD_LIMIT_SECONDS) for _ in range(19))
    endpoint.release()
    for thread in threads:
        thread.join()
    assert got == [first] * 20
    assert endpoint.requests == 2


@pytest.mark.anyio
async def test_async_callers_keep_the_valid_token_and_back_off(setup, caplog):
    clock, endpoint, tokens = setup
    first = await tokens.aget()
    endpoint.fail()
    clock.now += 945
    with caplog.at_level(logging.WARNING, logger="airflow_provider_packly.auth"):
        results = await asyncio.gather(*(tokens.aget() for _ in range(50)))
    assert all(token is first for token in results)
    assert endpoint.requests == 2
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    clock.now += 5
    endpoint.heal()
    assert (await tokens.aget()).value == "tok-3%2F"


@pytest.mark.parametrize(
    ("failures", "seconds_left", "expected"),
    [(1, 55, 5), (2, 50, 10), (3, 40, 20), (4, 20, 10), (5, 6, 3), (6, 1.5, 1), (1, 0.2, 1)],
)
def test_refresh_backoff_doubles_but_leaves_room_for_another_try_before_expiry(failures, seconds_left, expected):
    from airflow_provider_packly.auth import refresh_backoff

    assert refresh_backoff(failures, seconds_left, base=5.0) == expected


def test_through_the_hook_calls_go_on_during_a_token_endpoint_outage(make_connection):
    """The whole path: hook, retry policy (5 attempts), bearer auth, over MockTransport."""
    import time

    from airflow_provider_packly.hooks.packly import PacklyHook

    clock = FakeClock()
    clock.now = time.monotonic()  # the token source stamps tokens on the real clock
    token_answers = [
        httpx.Response(200, json={"token_type": "bearer", "access_token": "first%2F", "expires_in": LIFETIME})
    ]
    seen: list[str] = []

    def packly(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            seen.append("token")
            return token_answers.pop(0) if token_answers else httpx.Response(503)
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"response": []})

    connection = make_connection(token_refresh_margin=60, retry_backoff_seconds=0)
    with PacklyHook(
        connection=connection, transport=httpx.MockTransport(packly), token_cache=TokenCache(clock=clock)
    ) as hook:
        hook.request("GET", "/v1/reseller/orders")
        clock.now += 945
        hook.request("GET", "/v1/reseller/orders")
        hook.request("GET", "/v1/reseller/orders")
    assert seen == ["token", "Bearer first%2F", "token", "Bearer first%2F", "Bearer first%2F"]
