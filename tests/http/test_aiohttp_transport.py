"""``AiohttpTransport`` beyond the transport contract, over loopback: what it sends (the request's
headers exactly, nothing added), what it gives back (repeated headers, the reason phrase),
proxies from the environment and from ``proxy=``, TLS with a given context, a write deadline
that moves with the upload, errors without secrets, closing, and that importing the provider
does not import aiohttp (~230 ms, paid by every DAG parse otherwise).

The contract rows (every error type, pool and write timeouts, gzip decoded once, streaming)
are in ``tests/integration/test_transport_contract.py``, where this transport is one of
``TRANSPORTS``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest

from airflow_provider_packly._http.aiohttp_transport import AiohttpTransport
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from tests.integration.tls_proxy_helpers import ForwardProxy
from tests.loopback import (
    LoopbackListener,
    http_response,
    loopback_server,
    read_head,
    refused_url,
    reset,
    response_head,
)

pytestmark = pytest.mark.integration

TOKEN = "tok-Secret-4f9a"  # a bearer token that must never appear in an error
BASIC = "Basic Y2xpZW50OnMzY3JldA=="
PROXY_PASSWORD = "pr0xy-P@ss/word"


def timeouts(**phases: float) -> dict[str, float | None]:
    return httpx.Timeout(5.0, **phases).as_dict()


def send(
    url: str,
    method: str = "GET",
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    **options: object,
) -> httpx.Response:
    """One request through ``transport`` (an ``AiohttpTransport`` by default), body read."""

    async def go() -> httpx.Response:
        async with transport or AiohttpTransport() as built:
            request = httpx.Request(method, url, extensions={"timeout": timeouts()}, **options)  # type: ignore[arg-type]
            response = await built.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
            return response

    return asyncio.run(go())


@dataclass
class Recorder:
    """A server recording each request's header lines exactly as they arrived."""

    answer: bytes
    heads: list[list[tuple[str, str]]] = field(default_factory=list)


@contextmanager
def recording(answer: bytes = http_response(200, b"{}")) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(answer)

    def serve(sock: socket.socket) -> None:
        with sock:
            head = read_head(sock)
            if head is None:
                return
            recorder.heads.append(head.fields)
            length = int(head.headers.get("content-length", "0"))
            chunked = head.headers.get("transfer-encoding") == "chunked"
            rest = head.rest
            while (len(rest) < length or (chunked and not rest.endswith(b"0\r\n\r\n"))) and (chunk := sock.recv(65536)):
                rest += chunk
            sock.sendall(recorder.answer)

    listener = LoopbackListener(serve, name="recorder")
    listener.start()
    try:
        yield f"http://127.0.0.1:{listener.port}", recorder
    finally:
        listener.close()


@pytest.fixture
def no_proxy_environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# -- what is sent ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("GET", {}),
        ("POST", {"json": {"reference": "R-1"}}),
        ("PUT", {"content": b"x" * 200_000}),
        ("DELETE", {}),
        ("POST", {}),
    ],
    ids=["GET", "POST json", "PUT 200 kB", "DELETE", "POST bodyless"],
)
def test_the_request_headers_are_sent_as_httpx_sends_them(method, options, no_proxy_environment):
    headers = [("Authorization", f"Bearer {TOKEN}"), ("X-Tag", "one"), ("X-Tag", "two")]
    with recording() as (url, recorder):
        send(url + "/v1/x?a=1&b=%2F", method, headers=headers, **options)
        send(url + "/v1/x?a=1&b=%2F", method, transport=httpx.AsyncHTTPTransport(), headers=headers, **options)
    ours, httpx_default = ([(name.lower(), value) for name, value in fields] for fields in recorder.heads)
    assert sorted(ours) == sorted(httpx_default)
    assert [value for name, value in ours if name == "x-tag"] == ["one", "two"]
    assert not {"user-agent", "accept", "accept-encoding", "content-type"} & {name for name, _ in ours} - {
        name for name, _ in httpx_default
    }


def test_a_streamed_body_of_unknown_length_is_sent_chunked_once(no_proxy_environment):
    async def parts():
        yield b"a" * 70_000
        yield b"b" * 10

    with recording() as (url, recorder):
        send(url + "/up", "POST", content=parts())
    fields = [(name.lower(), value) for name, value in recorder.heads[0]]
    assert fields.count(("transfer-encoding", "chunked")) == 1
    assert "content-length" not in dict(fields)


# -- what comes back -------------------------------------------------------------------------------


def test_repeated_response_headers_and_the_reason_phrase_are_kept(no_proxy_environment):
    head = response_head(
        201, "Made It", {"Content-Length": "2", "Connection": "close", "Set-Cookie": "a=1", "X-Rate": "5"}
    )
    answer = head.replace(b"X-Rate: 5\r\n", b"X-Rate: 5\r\nX-Rate: 6\r\n") + b"{}"
    with loopback_server(lambda request: answer) as server:
        response = send(server.base_url + "/")
    assert response.status_code == 201
    assert response.reason_phrase == "Made It"
    assert response.http_version == "HTTP/1.1"
    assert response.headers.get_list("x-rate") == ["5", "6"]
    assert response.content == b"{}"


def test_cookies_are_not_kept_between_requests(no_proxy_environment):
    answer = http_response(200, b"{}", {"Set-Cookie": "session=abc"})
    with recording(answer) as (url, recorder):

        async def go() -> None:
            async with AiohttpTransport() as transport:
                for _ in range(2):
                    request = httpx.Request("GET", url + "/", extensions={"timeout": timeouts()})
                    response = await transport.handle_async_request(request)
                    await response.aread()
                    await response.aclose()

        asyncio.run(go())
    assert all("cookie" not in {name.lower() for name, _ in fields} for fields in recorder.heads)


# -- the write deadline moves with the upload -------------------------------------------------------


def test_a_large_upload_to_a_slow_but_steady_reader_is_not_a_write_timeout(no_proxy_environment):
    """The reader takes 256 KiB every 20 ms: a 24 MiB upload takes about twice the 1 s write
    timeout in all, but is never stalled for that long, so it succeeds (httpcore's write
    timeout is per write, too)."""
    size = 24 << 20
    received = threading.Event()

    def serve(sock: socket.socket) -> None:
        with sock:
            head = read_head(sock)
            if head is None:
                return
            got = len(head.rest)
            while got < size and not listener.stopping.wait(0.02):
                chunk = sock.recv(256 << 10)
                if not chunk:
                    return
                got += len(chunk)
            received.set()
            sock.sendall(http_response(200, b"{}"))

    listener = LoopbackListener(serve, name="steady-reader")
    listener.start()
    try:

        async def go() -> httpx.Response:
            async with AiohttpTransport() as transport:
                request = httpx.Request(
                    "POST",
                    f"http://127.0.0.1:{listener.port}/up",
                    content=bytes(size),
                    extensions={"timeout": timeouts(write=1.0)},
                )
                response = await transport.handle_async_request(request)
                await response.aread()
                await response.aclose()
                return response

        assert asyncio.run(go()).status_code == 200
    finally:
        listener.close()
    assert received.is_set()


# -- errors carry the request and no secret ---------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 two hundred OK\r\n\r\n",
        http_response(200, b'{"resp', content_length=100),
        reset(),
        None,
    ],
    ids=["garbage status line", "truncated body", "reset", "refused"],
)
def test_errors_carry_the_request_and_no_header_value(answer, no_proxy_environment):
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Basic": BASIC}
    with loopback_server(lambda request: answer) as server:
        url = refused_url() if answer is None else server.base_url + "/v1/x"
        with pytest.raises(httpx.TransportError) as caught:
            send(url, "POST", headers=headers, json={"a": 1})
    assert caught.value.request.url == url
    shown = [text for exc in _chain(caught.value) for text in (str(exc), repr(exc))]
    assert not any(TOKEN in text or BASIC in text for text in shown), shown


# -- proxies ---------------------------------------------------------------------------------------


@pytest.fixture
def http_sandbox():
    with run_sandbox(SandboxConfig()) as sandbox:
        yield sandbox


def test_the_environment_proxy_is_used_and_no_proxy_honoured(http_sandbox, monkeypatch, no_proxy_environment):
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        assert send(http_sandbox.base_url + "/v1/ping").status_code < 500
        assert len(proxy.counts.plain) == 1
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        send(http_sandbox.base_url + "/v1/ping")
        assert len(proxy.counts.plain) == 1
        assert send(http_sandbox.base_url + "/v1/ping", transport=AiohttpTransport(trust_env=False)).status_code < 500
    assert len(proxy.counts.plain) == 1


def test_the_given_proxy_replaces_the_environments_and_its_credentials_are_sent(
    http_sandbox, monkeypatch, no_proxy_environment
):
    with ForwardProxy() as env_proxy, ForwardProxy(credentials=("user", PROXY_PASSWORD)) as given:
        monkeypatch.setenv("HTTP_PROXY", env_proxy.url())
        transport = AiohttpTransport(proxy=given.url("user", quote(PROXY_PASSWORD, safe="")))
        assert send(http_sandbox.base_url + "/v1/ping", transport=transport).status_code < 500
    assert (len(given.counts.plain), given.counts.refused, len(env_proxy.counts.plain)) == (1, 0, 0)


def test_the_environment_proxys_credentials_are_sent_and_no_proxy_with_a_port_is_honoured(
    http_sandbox, monkeypatch, no_proxy_environment
):
    """The environment's proxy is found by the provider's clients' own rule (``env_proxy_for``)."""
    host_and_port = http_sandbox.base_url.removeprefix("http://")
    with ForwardProxy(credentials=("user", PROXY_PASSWORD)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url("user", quote(PROXY_PASSWORD, safe="")))
        assert send(http_sandbox.base_url + "/v1/ping").status_code < 500
        assert (len(proxy.counts.plain), proxy.counts.refused) == (1, 0)
        monkeypatch.setenv("NO_PROXY", host_and_port)
        assert send(http_sandbox.base_url + "/v1/ping").status_code < 500
    assert len(proxy.counts.plain) == 1


# -- TLS -------------------------------------------------------------------------------------------


def test_https_uses_the_given_context_and_an_unknown_ca_is_a_connect_error(tls_sandbox, pki, no_proxy_environment):
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert send(tls_sandbox.base_url + "/v1/ping", transport=AiohttpTransport(ssl_context=context)).status_code < 500
    with pytest.raises(httpx.ConnectError) as caught:
        send(tls_sandbox.base_url + "/v1/ping")  # httpx's default context: the test CA is unknown
    # The hook finds the certificate failure in the chain and says what to do about it.
    assert any(isinstance(exc, ssl.SSLCertVerificationError) for exc in _chain(caught.value))


def test_https_tunnels_through_the_given_proxy_and_a_refused_login_hides_the_password(
    tls_sandbox, pki, no_proxy_environment
):
    context = ssl.create_default_context(cafile=str(pki.ca))
    url = tls_sandbox.base_url + "/v1/ping"
    with ForwardProxy(credentials=("user", PROXY_PASSWORD)) as proxy:
        good = AiohttpTransport(ssl_context=context, proxy=proxy.url("user", quote(PROXY_PASSWORD, safe="")))
        assert send(url, transport=good).status_code < 500
        bad = AiohttpTransport(ssl_context=context, proxy=proxy.url("user", quote("wrong-" + PROXY_PASSWORD, safe="")))
        with pytest.raises(httpx.ProxyError) as caught:
            send(url, transport=bad)
    assert proxy.counts.connects == [tls_sandbox.base_url.removeprefix("https://")]
    assert proxy.counts.refused == 1
    shown = [text for exc in _chain(caught.value) for text in (str(exc), repr(exc))]
    assert not any(PROXY_PASSWORD in text or quote(PROXY_PASSWORD, safe="") in text for text in shown), shown


# -- bodies that came with the headers -------------------------------------------------------------


def test_an_answer_whose_body_came_with_its_headers_frees_its_pool_slot_at_once(no_proxy_environment):
    """Most API answers fit in the first packets: their body is taken at once and their
    connection given back, so an answer its caller never closes holds no pool slot."""
    body = b'{"ok": true}'

    async def go() -> list[bytes]:
        with recording(http_response(200, body)) as (url, _):
            async with AiohttpTransport(limits=httpx.Limits(max_connections=1)) as transport:
                answers = []
                for _ in range(2):  # the second waited for the first's slot: PoolTimeout before
                    request = httpx.Request("GET", url, extensions={"timeout": timeouts(pool=0.5)})
                    answers.append(await transport.handle_async_request(request))
                return [await answer.aread() for answer in answers]

    assert asyncio.run(go()) == [body, body]


def test_the_timeouts_of_calls_near_their_deadline_are_not_all_kept(no_proxy_environment):
    """Near its overall deadline a call's read timeout is the time it has left: one value per
    call. aiohttp's timeout objects for them are cached, but not without bound."""
    from airflow_provider_packly._http import aiohttp_transport

    async def go() -> None:
        with recording() as (url, _):
            async with AiohttpTransport() as transport:
                for left in range(100):
                    phases = timeouts(read=1 + left / 1000)
                    response = await transport.handle_async_request(
                        httpx.Request("GET", url, extensions={"timeout": phases})
                    )
                    await response.aread()

    asyncio.run(go())
    assert aiohttp_transport._client_timeout.cache_info().currsize <= 64


# -- closing ---------------------------------------------------------------------------------------


def test_aclose_is_safe_unused_and_twice(no_proxy_environment):
    async def go() -> None:
        unused = AiohttpTransport()
        await unused.aclose()
        await unused.aclose()
        with recording() as (url, _):
            used = AiohttpTransport()
            response = await used.handle_async_request(httpx.Request("GET", url, extensions={"timeout": timeouts()}))
            await response.aread()
            await response.aclose()
            await used.aclose()
            await used.aclose()

    asyncio.run(go())


# -- import cost -----------------------------------------------------------------------------------


def test_importing_the_provider_does_not_import_aiohttp():
    code = (
        "import sys\n"
        "import airflow_provider_packly.hooks.packly, airflow_provider_packly.operators.packly\n"
        "import airflow_provider_packly.sensors.packly, airflow_provider_packly.triggers.packly\n"
        "import airflow_provider_packly.triggers.order_events, airflow_provider_packly.triggers.order_scan\n"
        "import airflow_provider_packly._http.aiohttp_transport\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('aiohttp', 'yarl', 'multidict')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout
