"""The transport contract (issue 12): what every transport the provider can use must do, over loopback.

The retry policy's write safety rests on this table: a failure reported as "could not connect"
is resent, even for a POST, so a transport that reports a reset after sending as a connect
failure applies a write twice. Any transport offered to users (an aiohttp-backed one, a
leaner path) must pass every row; it joins ``TRANSPORTS`` with one line.

Every row runs at two levels for each transport:

* raw: the transport alone (``handle_request``/``handle_async_request``), with the phase
  timeouts in the request's ``timeout`` extension, as httpx's clients pass them;
* hook: ``PacklyHook.request``/``arequest`` (``stream``/``astream``), where the httpx error
  must arrive as a ``PacklyTransportError`` whose ``__cause__`` is that httpx error. Where
  nothing answers at all (refused, full backlog) the failing request is the token request
  the hook sends first: it goes through the same send path and transport as any call.

Timeouts are a few tenths of a second and the servers misbehave at once, so the whole file
takes seconds; nothing asserts a time, and concurrency is ordered by events.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from airflow_provider_packly._http.aiohttp_transport import AiohttpTransport
from airflow_provider_packly.auth import TokenCache
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook
from tests.loopback import (
    Exchange,
    Script,
    full_backlog,
    http_response,
    loopback_server,
    refused_url,
    reset,
    response_head,
    silence,
    token_then,
    unread_server,
)

pytestmark = pytest.mark.integration

API = "/v1/reseller/orders"
#: httpx's own default pool (``httpx._config.DEFAULT_LIMITS``): what the hook's clients get.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
#: Larger than loopback's socket buffers on both sides, so a server that never reads stalls it.
LARGE_UPLOAD = 48 << 20
STREAMED = 20 << 20


# -- the transports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transport:
    """A transport the provider can use. ``make(limits)`` builds it; ``None``: httpx's default
    one, which the hook builds itself (so the hook is then given no transport at all)."""

    name: str
    is_async: bool
    make: Callable[[httpx.Limits], Any] | None = None

    def build(self, limits: httpx.Limits = DEFAULT_LIMITS) -> Any:
        if self.make is not None:
            return self.make(limits)
        return httpx.AsyncHTTPTransport(limits=limits) if self.is_async else httpx.HTTPTransport(limits=limits)

    def for_hook(self, limits: httpx.Limits | None = None) -> Any:
        if self.make is None and limits is None:
            return None
        return self.build(limits or DEFAULT_LIMITS)


#: Every transport the provider can use: one line each.
TRANSPORTS = [
    Transport("httpx-default-sync", is_async=False),
    Transport("httpx-default-async", is_async=True),
    Transport("aiohttp", is_async=True, make=lambda limits: AiohttpTransport(limits=limits)),
]

each_transport = pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: t.name)


# -- calling at either level, sync or async ------------------------------------------------------


def _timeout(phases: dict[str, float]) -> dict[str, float | None]:
    return httpx.Timeout(5.0, **phases).as_dict()


def raw_request(
    transport: Transport,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    phases: dict[str, float] | None = None,
) -> httpx.Response:
    """One request straight through the transport, its body read (decoded) in full."""
    request = httpx.Request(method, url, content=content, extensions={"timeout": _timeout(phases or {})})
    if transport.is_async:

        async def go() -> httpx.Response:
            async with transport.build() as built:
                response = await built.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                return response

        return asyncio.run(go())
    with transport.build() as built:
        response = built.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        return response


def connection(base_url: str, **overrides: Any) -> PacklyConnection:
    """Settings for a hook on ``base_url``: one attempt (a row is about one exchange) unless overridden."""
    settings: dict[str, Any] = {
        "client_id": "contract-client",
        "client_secret": "contract-secret-Zq9!",
        "base_url": base_url,
        "timeout": 5.0,
        "retry_max_attempts": 1,
        "retry_backoff_seconds": 0.01,
    }
    settings.update(overrides)
    return PacklyConnection(**settings)


def make_hook(transport: Transport, conn: PacklyConnection, limits: httpx.Limits | None = None) -> PacklyHook:
    built = transport.for_hook(limits)
    if transport.is_async:
        return PacklyHook(connection=conn, async_transport=built, token_cache=TokenCache())
    return PacklyHook(connection=conn, transport=built, token_cache=TokenCache())


def hook_request(
    transport: Transport, conn: PacklyConnection, method: str, path: str, **options: Any
) -> httpx.Response:
    """``PacklyHook.request`` or ``arequest``, by the transport's kind."""
    hook = make_hook(transport, conn)
    if transport.is_async:

        async def go() -> httpx.Response:
            async with hook:
                return await hook.arequest(method, path, **options)

        return asyncio.run(go())
    with hook:
        return hook.request(method, path, **options)


# -- servers -------------------------------------------------------------------------------------


@contextmanager
def answering(answer: bytes | Script) -> Iterator[str]:
    """A Packly issuing tokens and answering every API request with ``answer``; yields its URL."""
    with loopback_server(token_then(answer)) as server:
        yield server.base_url


@contextmanager
def refused() -> Iterator[str]:
    yield refused_url()


@contextmanager
def unread() -> Iterator[str]:
    with unread_server() as server:
        yield server.base_url


def then_silence(data: bytes) -> Script:
    """Send ``data``, then nothing more, holding the connection open."""

    def play(exchange: Exchange) -> None:
        if exchange.send(data):
            exchange.stop.wait(30)

    return Script(play)


def trickled(body: bytes, every: float) -> Script:
    """``body`` after its head, four bytes each ``every`` seconds."""
    data = http_response(200, body, {"Content-Type": "application/json"})

    def play(exchange: Exchange) -> None:
        start = data.index(b"\r\n\r\n") + 4
        if not exchange.send(data[:start]):
            return
        for index in range(start, len(data), 4):
            if not (exchange.pause(every) and exchange.send(data[index : index + 4])):
                return

    return Script(play)


CLOSE_WITHOUT_ANSWER = Script(lambda exchange: None)
CHUNKED_HEAD = response_head(200, "OK", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})


# -- the failure rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One failure: a server, the phase timeouts, the request, and the httpx error it must raise."""

    name: str
    serve: Callable[[], AbstractContextManager[str]]
    expected: type[httpx.TransportError]
    phases: dict[str, float] = field(default_factory=dict)
    method: str = "GET"
    upload: int = 0


ROWS = [
    Row("connection refused", refused, httpx.ConnectError),
    Row("connect timeout (full backlog)", full_backlog, httpx.ConnectTimeout, {"connect": 0.2}),
    Row("read timeout before the headers", lambda: answering(silence()), httpx.ReadTimeout, {"read": 0.2}),
    Row(
        "read timeout mid-body",
        lambda: answering(then_silence(http_response(200, b"[1,", content_length=100))),
        httpx.ReadTimeout,
        {"read": 0.2},
    ),
    Row("write timeout on a large POST", unread, httpx.WriteTimeout, {"write": 0.3}, "POST", LARGE_UPLOAD),
    Row("closed without answering", lambda: answering(CLOSE_WITHOUT_ANSWER), httpx.RemoteProtocolError),
    Row("reset before answering", lambda: answering(reset()), httpx.ReadError),
    Row(
        "truncated body",
        lambda: answering(http_response(200, b'{"resp', content_length=100)),
        httpx.RemoteProtocolError,
    ),
    Row(
        "truncated chunked body",
        lambda: answering(CHUNKED_HEAD + b'7\r\n{"resp"\r\n'),
        httpx.RemoteProtocolError,
    ),
    Row("garbage status line", lambda: answering(b"HTTP/1.1 two hundred OK\r\n\r\n"), httpx.RemoteProtocolError),
]

each_row = pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)


@each_row
@each_transport
def test_the_transport_raises_the_contracted_error(transport, row):
    with row.serve() as base_url, pytest.raises(httpx.TransportError) as caught:
        raw_request(transport, row.method, base_url + API, content=bytes(row.upload) or None, phases=row.phases)
    assert type(caught.value) is row.expected, repr(caught.value)


@each_row
@each_transport
def test_the_hook_raises_a_packly_error_caused_by_the_contracted_error(transport, row):
    settings = {f"{phase}_timeout": seconds for phase, seconds in row.phases.items()}
    options = {"json": {"blob": "x" * row.upload}} if row.upload else {}
    with row.serve() as base_url, pytest.raises(PacklyTransportError) as caught:
        hook_request(transport, connection(base_url, **settings), row.method, API, **options)
    assert type(caught.value.__cause__) is row.expected, repr(caught.value.__cause__)
    assert "contract-secret" not in str(caught.value)


@each_transport
def test_an_api_call_refused_after_the_token_was_issued_is_a_connect_error(transport):
    # The rows above fail at the token request where nothing answers; here Packly goes away
    # between the token and the call, so the call itself is refused.
    stack = ExitStack()
    server = stack.enter_context(loopback_server(token_then(b"")))
    hook = make_hook(transport, connection(server.base_url))
    with stack, pytest.raises(PacklyTransportError) as caught:
        if transport.is_async:

            async def go() -> None:
                async with hook:
                    await hook.aget_token()
                    stack.close()
                    await hook.arequest("GET", API)

            asyncio.run(go())
        else:
            with hook:
                hook.get_token()
                stack.close()
                hook.request("GET", API)
    assert type(caught.value.__cause__) is httpx.ConnectError, repr(caught.value.__cause__)
    assert f"GET {server.base_url}{API}" in str(caught.value)
    assert server.calls == [("POST", "/v1/oauth2/token")]


# -- the pool ------------------------------------------------------------------------------------

HELD = then_silence(http_response(200, b"[", content_length=10))


@each_transport
def test_the_transport_raises_pool_timeout_when_its_one_connection_is_taken(transport):
    limits = httpx.Limits(max_connections=1)

    def held(url: str) -> httpx.Request:
        return httpx.Request("GET", url, extensions={"timeout": _timeout({"pool": 0.2})})

    with answering(HELD) as base_url:
        if transport.is_async:

            async def go() -> None:
                async with transport.build(limits) as built:
                    first = await built.handle_async_request(held(base_url + API))
                    try:
                        await built.handle_async_request(held(base_url + API))
                    finally:
                        await first.aclose()

            with pytest.raises(httpx.TransportError) as caught:
                asyncio.run(go())
        else:
            with transport.build(limits) as built, pytest.raises(httpx.TransportError) as caught:
                first = built.handle_request(held(base_url + API))
                try:
                    built.handle_request(held(base_url + API))
                finally:
                    first.close()
    assert type(caught.value) is httpx.PoolTimeout, repr(caught.value)


@each_transport
def test_the_hook_raises_pool_timeout_while_a_stream_holds_the_one_connection(transport):
    with answering(HELD) as base_url:
        hook = make_hook(transport, connection(base_url, pool_timeout=0.2), httpx.Limits(max_connections=1))
        if transport.is_async:

            async def go() -> None:
                async with hook, hook.astream("GET", API):
                    await hook.arequest("GET", API)

            with pytest.raises(PacklyTransportError) as caught:
                asyncio.run(go())
        else:
            with hook, hook.stream("GET", API), pytest.raises(PacklyTransportError) as caught:
                hook.request("GET", API)
    assert type(caught.value.__cause__) is httpx.PoolTimeout, repr(caught.value.__cause__)


# -- answers that must succeed -------------------------------------------------------------------

SLOW_BODY = json.dumps({"response": [{"id": "ORD-1", "status": "paid"}]}).encode()  # 46 bytes: 12 reads


@each_transport
def test_a_slow_body_never_idle_longer_than_the_read_timeout_succeeds(transport):
    # 12 pieces 0.1 s apart: about 1.2 s in all, more than the 1 s read timeout, which leaves a
    # loaded machine 0.9 s of slack between pieces (the token request is under it too).
    with answering(trickled(SLOW_BODY, every=0.1)) as base_url:
        raw = raw_request(transport, "GET", base_url + API, phases={"read": 1.0})
        through_hook = hook_request(transport, connection(base_url, read_timeout=1.0), "GET", API)
    assert raw.content == through_hook.content == SLOW_BODY


PAYLOAD = b"%PDF-1.7 a dieline " * 100
ONCE = gzip.compress(PAYLOAD, mtime=0)
#: A gzip file served with ``Content-Encoding: gzip``: decoding once gives the file, twice the PDF.
TWICE = http_response(
    200, gzip.compress(ONCE, mtime=0), {"Content-Type": "application/gzip", "Content-Encoding": "gzip"}
)


@each_transport
def test_a_gzip_body_is_decoded_exactly_once(transport):
    with answering(TWICE) as base_url:
        raw = raw_request(transport, "GET", base_url + API)
        through_hook = hook_request(transport, connection(base_url), "GET", API)
    assert raw.content == through_hook.content == ONCE


def staged_body(events: list[str], seen: threading.Event) -> Script:
    """A 20 MiB body: its head and first 64 KiB, then the rest only once the client has
    seen a first chunk (or 5 s have passed: a client that buffers the body fails, late)."""
    head = response_head(200, "OK", {"Content-Type": "application/pdf", "Content-Length": str(STREAMED)})
    first = 64 << 10

    def play(exchange: Exchange) -> None:
        events.append("server sends the first 64 KiB and holds the rest")
        if not exchange.send(head + bytes(first)):
            return
        events.append("server: the client saw a chunk" if seen.wait(5) else "server: no chunk seen within 5 s")
        remaining = STREAMED - first
        while remaining and exchange.send(bytes(min(remaining, 1 << 20))):
            remaining -= min(remaining, 1 << 20)

    return Script(play)


@pytest.mark.parametrize("level", ["raw", "hook"])
@each_transport
def test_a_20_mib_stream_yields_its_first_chunk_before_the_rest_is_sent(transport, level):
    events: list[str] = []
    seen = threading.Event()
    received = 0

    def chunk(data: bytes) -> None:
        nonlocal received
        if not received:
            events.append("client got a first chunk")
            seen.set()
        received += len(data)

    with loopback_server(token_then(staged_body(events, seen))) as server:
        url = server.base_url + API
        request = httpx.Request("GET", url, extensions={"timeout": _timeout({})})
        if transport.is_async:

            async def go() -> None:
                if level == "raw":
                    async with transport.build() as built:
                        response = await built.handle_async_request(request)
                        async for data in response.aiter_bytes():
                            chunk(data)
                        await response.aclose()
                    return
                hook = make_hook(transport, connection(server.base_url))
                async with hook, hook.astream("GET", API) as response:
                    async for data in response.aiter_bytes():
                        chunk(data)

            asyncio.run(go())
        elif level == "raw":
            with transport.build() as built:
                response = built.handle_request(request)
                for data in response.iter_bytes():
                    chunk(data)
                response.close()
        else:
            with make_hook(transport, connection(server.base_url)) as hook, hook.stream("GET", API) as response:
                for data in response.iter_bytes():
                    chunk(data)
    assert events == [
        "server sends the first 64 KiB and holds the rest",
        "client got a first chunk",
        "server: the client saw a chunk",
    ]
    assert received == STREAMED


# -- write safety through the retry policy -------------------------------------------------------


@each_transport
def test_a_post_reset_after_the_server_read_it_reaches_the_server_exactly_once(transport):
    with loopback_server(token_then(reset())) as server:
        conn = connection(server.base_url, retry_max_attempts=3)
        with pytest.raises(PacklyTransportError) as caught:
            hook_request(transport, conn, "POST", API, json={"reference": "R-1"})
        assert type(caught.value.__cause__) is httpx.ReadError, repr(caught.value.__cause__)
        assert "may have been applied" in str(caught.value)
        assert server.calls.count(("POST", API)) == 1
        # The same failure on a GET is resent: the policy was live, and held back only the write.
        with pytest.raises(PacklyTransportError):
            hook_request(transport, conn, "GET", API)
        assert server.calls.count(("GET", API)) == 3
