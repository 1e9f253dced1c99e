"""An ``httpx.AsyncBaseTransport`` over aiohttp: httpx's API, aiohttp's speed (issue 12).

httpx's own async transport (httpcore) costs about 15x the CPU of aiohttp per call; this one
keeps ``httpx.Request``/``httpx.Response`` at the edges and lets aiohttp do the HTTP/1.1 work.
It keeps the transport contract (``tests/integration/test_transport_contract.py``) that the
retry policy's write safety rests on: every failure is the httpx error httpcore raises for it,
so that only a request provably never sent is reported as a connect failure.

What aiohttp lacks is added here: a write timeout (the body is fed in chunks under a deadline
pushed forward as each chunk is taken) and a pool timeout (a semaphore of ``max_connections``
held until the response is closed, or freed at once for a body that came with the headers).
aiohttp's own ``trust_env`` is not used: it reads the environment and ``~/.netrc`` on a thread
for every request. The environment's proxy is looked up once per scheme, host and port
instead, by the rule the provider's clients use (``_http.proxies.env_proxy_for``).

aiohttp is slow to import (issue 12 measured about 230 ms), so it is imported on the first
request, never with this module.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import math
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from airflow_provider_packly.limits import cancel_after

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport"]

#: Bytes of request body handed to aiohttp at a time; each take pushes the write deadline.
CHUNK = 64 << 10
#: Headers aiohttp adds when a request lacks them: only what httpx's request carries is sent.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


#: The upload of the request being sent, seen by its body-writing task (a copy of the context).
_UPLOAD: contextvars.ContextVar[_Upload | None] = contextvars.ContextVar("packly_upload", default=None)


@functools.lru_cache(maxsize=256)
def _yarl_url(url: str) -> Any:
    """``url`` as aiohttp takes it, already encoded (as httpx encoded it); parsed once per URL."""
    from yarl import URL

    return URL(url, encoded=True)


@functools.lru_cache(maxsize=64)
def _client_timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for a request's connect and read phases. Bounded: near its overall
    deadline a call's phases are cut to the time left, so each such call has its own."""
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


@functools.cache
def _request_class() -> type[aiohttp.ClientRequest]:
    """aiohttp's request, sending the headers httpx built, and telling the upload which socket
    its body goes to (see ``_Upload``)."""
    import aiohttp

    class Request(aiohttp.ClientRequest):
        def update_body_from_data(self, body: Any, *args: Any, **kwargs: Any) -> None:
            # aiohttp adds "Content-Length: 0" to a bodyless DELETE; httpx does not: send its headers.
            given = "Content-Length" in self.headers
            super().update_body_from_data(body, *args, **kwargs)
            if body is None and not given:
                self.headers.pop("Content-Length", None)

        async def write_bytes(self, writer: Any, conn: Any, *args: Any) -> None:
            upload = _UPLOAD.get()
            if upload is not None:
                upload.transport = conn.transport
            await super().write_bytes(writer, conn, *args)

    return Request


def _mapped(exc: BaseException, request: httpx.Request, *, sending: bool) -> httpx.TransportError:
    """The httpx error httpcore raises for aiohttp's ``exc``; ``sending``: the body was not all taken.

    The message names the failure from aiohttp's text, which holds no header value. ``exc``
    becomes its cause (the hook finds a TLS failure there), except an error about an answer:
    that one holds the request's headers (a token, ``Proxy-Authorization``), shown by its repr.
    Raise the result outside the ``except`` block, so that it has no context either.
    """
    import aiohttp

    error: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        error = httpx.ConnectTimeout
    elif isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        error = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientHttpProxyError):
        error = httpx.ProxyError
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = httpx.ConnectError
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        error = httpx.RemoteProtocolError
    elif isinstance(exc, OSError):
        error = httpx.WriteError if sending else httpx.ReadError
    else:
        error = httpx.RemoteProtocolError
    mapped = error(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, request=request)
    mapped.__cause__ = None if isinstance(exc, aiohttp.ClientResponseError) else exc
    return mapped


class _Body(httpx.AsyncByteStream):
    """The response body: aiohttp's chunks as they arrive, its errors as httpx's. Closing it
    gives the connection back (or closes it) and frees the pool slot."""

    def __init__(self, transport: AiohttpTransport, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._transport = transport
        self._response = response
        self._request = request
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        failure = None
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:  # noqa: BLE001 - a transport raises httpx's errors only
            failure = _mapped(exc, self._request, sending=False)
        if failure is not None:
            raise failure

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._transport._done(self._response)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests with aiohttp, one ``ClientSession`` opened on the first request.

    :param ssl_context: the TLS context for https (httpx's default context if ``None``).
    :param proxy: a proxy URL for every request; it replaces the environment's, as in httpx.
    :param trust_env: without ``proxy``, use ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``.
    :param limits: httpx's pool limits: connections at once (waiting longer than the request's
        pool timeout raises ``PoolTimeout``), idle connections kept, and how long.

    A session belongs to the event loop it was opened on: use one transport per loop.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
    ) -> None:
        self._ssl_context = ssl_context
        self._proxy = proxy
        self._trust_env = trust_env
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.max_connections) if limits.max_connections else None
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str, int | None], tuple[Any, dict[str, str] | None]] = {}

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context https requests use (``None``: httpx's default one)."""
        return self._ssl_context

    def _open(self) -> aiohttp.ClientSession:
        """The session, opened in the running loop: aiohttp imported here, not at module import."""
        import aiohttp

        # The pool's size is kept by self._slots. aiohttp keeps every reusable connection idle
        # until keepalive_expiry (at most max_connections of them, fewer in practice): it has no
        # cap on idle ones, so max_keepalive_connections only tells apart 0 (none kept) from more.
        keepalive = self._limits.max_keepalive_connections
        options: dict[str, Any] = {"limit": 0, "force_close": keepalive == 0}
        if keepalive != 0 and self._limits.keepalive_expiry is not None:
            options["keepalive_timeout"] = self._limits.keepalive_expiry
        connector = aiohttp.TCPConnector(ssl=self._ssl_context or httpx.create_ssl_context(), **options)
        self._session = aiohttp.ClientSession(
            connector=connector,
            request_class=_request_class(),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes, exactly once
            trust_env=False,  # see the module's docstring: the proxy is found by _proxy_for
            raise_for_status=False,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        if hasattr(self._session, "_retry_connection"):
            # aiohttp resends an idempotent request once when its connection drops, unseen by
            # the retry policy; that policy alone decides (and counts) every resend.
            self._session._retry_connection = False
        return self._session

    def _proxy_for(self, url: httpx.URL) -> tuple[Any, dict[str, str] | None]:
        """The proxy for ``url`` (a ``yarl.URL`` without credentials, or ``None``) and the
        ``Proxy-Authorization`` header for its credentials; cached per scheme, host and port."""
        key = (url.scheme, url.host, url.port)
        found = self._proxies.get(key)
        if found is None:
            from yarl import URL

            from airflow_provider_packly._http.proxies import env_proxy_for

            proxy: Any = None
            credentials: str | None = None
            given = self._proxy if self._proxy is not None else env_proxy_for(str(url)) if self._trust_env else None
            if given is not None:
                proxy = URL(given)
                if proxy.user is not None:
                    pair = f"{proxy.user}:{proxy.password or ''}".encode()
                    credentials = "Basic " + base64.b64encode(pair).decode("ascii")
                    proxy = proxy.with_user(None)
            found = self._proxies[key] = (proxy, {"Proxy-Authorization": credentials} if credentials else None)
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response's body streams, its connection held until it is closed
        (a body that came whole with the headers is in memory, its connection already free)."""
        phases = request.extensions.get("timeout") or {}
        if self._slots is not None:
            if self._slots.locked():
                if await cancel_after(phases.get("pool"), self._slots.acquire) is None:
                    raise httpx.PoolTimeout("no connection became free within the pool timeout", request=request)
            else:
                await self._slots.acquire()
        try:
            response = await self._send(request, phases)
        except BaseException:
            self._free()
            raise
        content = response.content
        stream: httpx.AsyncByteStream
        if content.is_eof() and content.exception() is None:
            # The whole body came with the headers (most API answers): take it now, and give
            # the connection back at once, instead of a chunk loop for one chunk.
            stream = httpx.ByteStream(content.read_nowait())
            self._done(response)
        else:
            stream = _Body(self, response, request)
        version = response.version
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=stream,
            extensions={
                "http_version": b"HTTP/1.1"
                if version is None or version == (1, 1)
                else f"HTTP/{version[0]}.{version[1]}".encode(),
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def _send(self, request: httpx.Request, phases: dict[str, float | None]) -> aiohttp.ClientResponse:
        session = self._session or self._open()
        timeout = _client_timeout(phases.get("connect"), phases.get("read"))
        proxy, proxy_headers = self._proxy_for(request.url)
        headers = request.headers.multi_items()
        upload = None
        body: bytes | AsyncIterator[bytes] | None = None
        if not isinstance(request.stream, httpx.ByteStream):
            # aiohttp frames a streamed body itself: a chunked one is re-framed by it.
            headers = [item for item in headers if item[0] != "transfer-encoding"]
            upload = _Upload(request, phases.get("write"))
            body = upload.chunks()
        elif len(request.content) > CHUNK:
            upload = _Upload(request, phases.get("write"))
            body = upload.chunks()
        elif request.content:
            body = request.content  # fits the socket's buffer at once: it cannot stall
        if proxy_headers is not None and request.url.scheme == "http":
            # Forwarded, not tunnelled: the proxy reads its credentials from the request itself.
            headers = [*headers, *proxy_headers.items()]
        send = functools.partial(
            session.request,
            request.method,
            _yarl_url(str(request.url)),
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=timeout,
            proxy=proxy,
            proxy_headers=proxy_headers,
        )
        failure: httpx.TransportError
        if upload is None:  # nothing to time out on the way out: no write deadline
            try:
                return await send()
            except Exception as exc:  # noqa: BLE001 - a transport raises httpx's errors only
                failure = _mapped(exc, request, sending=False)
            raise failure
        token = _UPLOAD.set(upload)
        try:
            # A scope of this task: the body's writer (aiohttp's own task) moves its deadline.
            with anyio.CancelScope() as deadline:
                upload.deadline = deadline
                response = await send()
                upload.deadline = None  # answered first: the rest of the body goes without one
        except Exception as exc:  # noqa: BLE001 - a transport raises httpx's errors only
            failure = _mapped(exc, request, sending=upload.sending)
        else:
            if not deadline.cancelled_caught:
                return response
            upload.abort()
            failure = httpx.WriteTimeout(
                f"the server took none of the request body for {upload.write:g} s (the write timeout)",
                request=request,
            )
        finally:
            upload.deadline = None
            _UPLOAD.reset(token)
        raise failure

    def _free(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def _done(self, response: aiohttp.ClientResponse) -> None:
        """A response closed: its connection back to the pool (closed if its body was not
        read to the end), its pool slot freed."""
        response.release()
        self._free()

    async def aclose(self) -> None:
        """Close the session and its connections; safe to call twice, or before any request."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # A connection dropped on an error closes its socket on the loop's next turn: let
            # it run, so that a loop ending right after this leaves no socket open.
            await asyncio.sleep(0)


class _Upload:
    """A request body fed to aiohttp ``CHUNK`` bytes at a time under a write deadline that each
    take pushes forward: a peer that stops reading for longer than the write timeout ends the
    request with ``WriteTimeout`` (aiohttp itself has no write timeout)."""

    def __init__(self, request: httpx.Request, write: float | None) -> None:
        self.request = request
        self.write = write
        self.deadline: anyio.CancelScope | None = None
        self.sending = False
        self.transport: asyncio.Transport | None = None

    def abort(self) -> None:
        """Drop the connection now: closing it would wait, forever, to flush the unsent body."""
        if self.transport is not None:
            self.transport.abort()

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        self.sending = True
        async for piece in self.request.stream:  # type: ignore[union-attr]
            for start in range(0, len(piece), CHUNK):
                if self.write is not None:
                    self._push(loop.time() + self.write)
                yield piece[start : start + CHUNK]
        self._push(None)
        self.sending = False

    def _push(self, when: float | None) -> None:
        """Move the write deadline (``None``: none), unless the answer came first (then the
        request no longer waits on the body). One that has fired stays fired."""
        if self.deadline is not None:
            self.deadline.deadline = math.inf if when is None else when
