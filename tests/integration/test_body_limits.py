"""Token responses and error bodies are read only up to a limit: a gzip bomb stays small.

A 200 KB gzip answer decodes to 200 MB. Before the limit was applied while streaming, the
whole of it was decoded into memory and only then measured. Memory is measured with
tracemalloc (Python's own allocations, peak during the call): deterministic, unlike RSS.
"""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyAuthError
from airflow_provider_packly.hooks.packly import PacklyHook

from ..loopback import gzip_bomb, http_response, loopback_server, token_then

pytestmark = pytest.mark.integration

ORDERS = "/v1/reseller/orders"
#: Peak Python memory a bounded read may use: the limit plus one decoded piece (at most about
#: 8 MB at deflate's best ratio) and the client's own buffers. 200 MB unbounded.
PEAK_BOUND = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(200)


def bombing(body: bytes, status: int) -> bytes:
    return http_response(status, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"})


def connection(server) -> PacklyConnection:
    return PacklyConnection(
        client_id="bomb-client",
        client_secret="bomb-secret-K2",
        base_url=server.base_url,
        retry_max_attempts=1,
        request_deadline_seconds=60,
    )


def peak_while(call) -> tuple[int, BaseException]:
    tracemalloc.start()
    try:
        try:
            call()
        except Exception as exc:
            error = exc
        else:
            raise AssertionError("the call succeeded")
        return tracemalloc.get_traced_memory()[1], error
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_gzip_bomb_token_response_is_refused_without_decoding_it(bomb, use_async):
    with loopback_server(lambda request: bombing(bomb, 200)) as server:
        hook = PacklyHook(connection=connection(server))
        if use_async:

            async def get() -> None:
                async with hook:
                    await hook.aget_token()

            peak, error = peak_while(lambda: asyncio.run(get()))
        else:
            with hook:
                peak, error = peak_while(hook.get_token)
    assert isinstance(error, PacklyAuthError)
    assert "over 65,536 bytes, far more than a token response" in str(error)
    assert peak < PEAK_BOUND, f"{peak:,} bytes"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_gzip_bomb_error_body_gives_the_error_without_decoding_it(bomb, use_async):
    with loopback_server(token_then(bombing(bomb, 500))) as server:
        hook = PacklyHook(connection=connection(server))
        if use_async:

            async def call() -> None:
                async with hook:
                    await hook.arequest("GET", ORDERS)

            peak, error = peak_while(lambda: asyncio.run(call()))
        else:
            with hook:
                peak, error = peak_while(lambda: hook.request("GET", ORDERS))
    assert isinstance(error, PacklyAPIError) and error.http_status == 500
    assert peak < PEAK_BOUND, f"{peak:,} bytes"


def test_a_gzip_bomb_401_is_not_read_before_the_token_is_refreshed(bomb):
    """The first 401 of a call is discarded for a refresh: its body is not read at all."""
    answers = iter([bombing(bomb, 401), http_response(200, b'{"response": []}', {"Content-Type": "application/json"})])
    with (
        loopback_server(token_then(lambda request: next(answers))) as server,
        PacklyHook(connection=connection(server)) as hook,
    ):
        tracemalloc.start()
        try:
            response = hook.request("GET", ORDERS)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert response.json() == {"response": []}
    assert peak < PEAK_BOUND, f"{peak:,} bytes"
