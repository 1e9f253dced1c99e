"""``PacklyHttp``: one connection's clients and sends, the I/O under the hook and the tokens.

The hook builds one per connection and hands its token senders to ``auth.TokenSource``, so a
call flows one way: hook -> ``PacklyHttp`` (API requests) and hook -> ``TokenSource`` ->
``PacklyHttp`` (token requests); nothing here calls back into the hook or the token layer.

Every send streams, so that the shared rules decide how much of a body is read: an error
body or a token response a bounded prefix, a success all of it, or (``stream``) none yet.
The call, retries and body included, runs under the connection's overall deadline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from airflow_provider_packly._http.clients import (
    SHARED_ASYNC_CLIENTS,
    AsyncPacklyClient,
    PacklyClient,
    close_at_loop_shutdown,
    close_elsewhere,
    forget_after_fork,
    new_async_client,
    new_client,
    running_loop,
    user_agent,
)
from airflow_provider_packly._http.masking import amask_proxy_credentials, mask_proxy_credentials
from airflow_provider_packly._http.messages import build_request, endpoint_path
from airflow_provider_packly._http.retrying import acall, call
from airflow_provider_packly.compressed import acheck_compressed_end, check_compressed_end
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.core.tokens import MAX_TOKEN_RESPONSE_BYTES
from airflow_provider_packly.exceptions import PacklyError, body_error, transport_error
from airflow_provider_packly.limits import (
    MAX_ERROR_BODY_BYTES,
    Deadline,
    aread_limited,
    bound_body,
    cancel_after,
    read_limited,
)
from airflow_provider_packly.metrics import timed_request
from airflow_provider_packly.retries import RetryPolicy
from airflow_provider_packly.tls import SSL_CONTEXTS, unverified_tls_warning

__all__ = ["PacklyHttp", "retry_policy_for"]

_log = logging.getLogger(__name__)


def retry_policy_for(connection: PacklyConnection) -> RetryPolicy:
    """The retry policy of ``connection``'s settings (tests replace it to inject a fake clock)."""
    return RetryPolicy.for_connection(connection)


class PacklyHttp:
    """One connection's sync client, async client and sends, each client created on first use.

    :param retry_policy: how sends are retried (``retry_policy_for(connection)``).
    :param transport: an ``httpx`` transport for the sync client (tests: ``httpx.MockTransport``).
    :param async_transport: the same for the async client.
    :param shared_async_client: take the async client from the process's per-event-loop shared
        clients (``SHARED_ASYNC_CLIENTS``) instead of opening one of its own.
    """

    def __init__(
        self,
        connection: PacklyConnection,
        *,
        retry_policy: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        shared_async_client: bool = False,
    ) -> None:
        self.connection = connection
        self.retry_policy = retry_policy
        self._transport = transport
        self._async_transport = async_transport
        self._shared = shared_async_client
        self._lock = threading.Lock()
        self._client: PacklyClient | None = None
        self._aclient: AsyncPacklyClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        #: Closes ``_aclient`` when its event loop shuts down (see ``aclient``).
        self._aclient_closer: AsyncGenerator[None, None] | None = None
        self._warned = False
        self._deadline_seconds = connection.request_deadline()
        forget_after_fork(self)

    # -- clients --------------------------------------------------------------------------------

    def client(self) -> PacklyClient:
        """The one sync client (created on first use)."""
        if self._client is not None:
            return self._client
        context = SSL_CONTEXTS.get(self.connection.tls, self.connection.where)
        with self._lock:
            if self._client is None:
                if self._first_use():
                    mask_proxy_credentials(self.connection)
                self._client = new_client(self.connection, self._transport, context)
            return self._client

    async def aclient(self) -> AsyncPacklyClient:
        """The async client of the running event loop (this one's own, or the shared one)."""
        client = self._aclient
        if client is not None and self._aclient_loop is running_loop():
            return client
        connection = self.connection
        context = await SSL_CONTEXTS.aget(connection.tls, connection.where)
        if self._first_use():  # once: shared-client hooks come through here on every call
            await amask_proxy_credentials(connection)
        if self._shared:
            return await SHARED_ASYNC_CLIENTS.get(connection, self._async_transport, context)
        loop = running_loop()
        created = None
        with self._lock:
            stale = None
            if self._aclient is not None and self._aclient_loop is not loop:
                # A client's pool belongs to the loop that opened it; that loop is gone or busy.
                _log.debug("Event loop changed since the async client was created; creating a new one.")
                stale = (self._aclient, self._aclient_loop, self._aclient_closer)
                self._aclient = self._aclient_closer = None
            if self._aclient is None:
                created = self._aclient = new_async_client(connection, self._async_transport, context)
                self._aclient_loop = loop
            client = self._aclient
        if stale is not None:
            close_elsewhere(*stale)
        if created is not None:
            # Closed when this loop shuts down its async generators (``asyncio.run`` does), so a
            # hook used under several ``asyncio.run`` calls leaves no client open on a dead loop.
            closer = close_at_loop_shutdown({None: created})
            await closer.__anext__()
            with self._lock:
                if self._aclient is created:
                    self._aclient_closer = closer
        return client

    @property
    def open_client(self) -> PacklyClient | None:
        """The sync client if one is open (``close`` drops it)."""
        return self._client

    @property
    def open_aclient(self) -> AsyncPacklyClient | None:
        """This object's own async client if one is open (never the shared one)."""
        return self._aclient

    def _first_use(self) -> bool:
        """True the first time only: log, once, a setting that works but weakens security
        (verification off); the caller then registers the proxy password with the masker."""
        if self._warned:
            return False
        self._warned = True
        warning = unverified_tls_warning(self.connection)
        if warning:
            _log.warning("%s", warning)
        return True

    def close(self) -> None:
        """Close the sync client (the async one needs ``aclose``)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close both clients (a shared async client stays open for the other hooks).

        An async client opened on another event loop is closed there if that loop still runs;
        one whose loop has ended was closed when that loop shut down (``aclient``).
        """
        self.close()
        with self._lock:
            aclient, loop, closer = self._aclient, self._aclient_loop, self._aclient_closer
            self._aclient = self._aclient_closer = None
        if aclient is None:
            return
        if loop is not running_loop():
            close_elsewhere(aclient, loop, closer)
        elif closer is not None:
            await closer.aclose()  # its ``finally`` closes the client
        else:
            await aclient.aclose()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop (never close) the parent's clients; the next call opens new ones.

        The child's copies of the parent's keep-alive sockets must not be used (both processes
        would read and write one connection) nor shut down (that would cut the parent's). They
        are only dropped: the child's copy of each descriptor is released when collected.
        """
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._client = None
        self._aclient = self._aclient_closer = None
        self._aclient_loop = None

    # -- sends ----------------------------------------------------------------------------------

    def request(
        self, method: str, endpoint: str, *, auth: httpx.Auth | None, stream: bool = False, **options: Any
    ) -> httpx.Response:
        """``method endpoint`` (``endpoint_path``, then ``build_request``'s checks), sent with the
        sync client; ``stream``: the body is left to the caller to read."""
        client = self.client()
        request = build_request(client, method, endpoint_path(self.connection, endpoint), **options)
        return self._send(client, request, auth=auth, stream=stream)

    async def arequest(
        self, method: str, endpoint: str, *, auth: httpx.Auth | None, stream: bool = False, **options: Any
    ) -> httpx.Response:
        """``request`` for coroutines."""
        client = await self.aclient()
        request = build_request(client, method, endpoint_path(self.connection, endpoint), **options)
        return await self._asend(client, request, auth=auth, stream=stream)

    def send(
        self, request: httpx.Request, *, auth: httpx.Auth | None = None, body_limit: int | None = None
    ) -> httpx.Response:
        """Send a built ``request`` with the sync client and read its body (at most ``body_limit``)."""
        return self._send(self.client(), request, auth=auth, body_limit=body_limit)

    async def asend(
        self, request: httpx.Request, *, auth: httpx.Auth | None = None, body_limit: int | None = None
    ) -> httpx.Response:
        """``send`` for coroutines."""
        return await self._asend(await self.aclient(), request, auth=auth, body_limit=body_limit)

    def send_token_request(self, request: httpx.Request) -> httpx.Response:
        """Send a token request (``auth.TokenSource``'s sender): no auth, a bounded body."""
        return self.send(request, body_limit=MAX_TOKEN_RESPONSE_BYTES)

    async def asend_token_request(self, request: httpx.Request) -> httpx.Response:
        """``send_token_request`` for coroutines."""
        return await self.asend(request, body_limit=MAX_TOKEN_RESPONSE_BYTES)

    def _send(
        self,
        client: PacklyClient,
        request: httpx.Request,
        *,
        auth: httpx.Auth | None,
        stream: bool = False,
        body_limit: int | None = None,
    ) -> httpx.Response:
        deadline = self._start(request)

        def send_once(request: httpx.Request) -> httpx.Response:
            deadline.apply(request, client.timeout)
            response = _send_through(client.transport, request, auth)
            return _read(response, deadline, body_limit=body_limit, stream=stream)

        with deadline.active(), timed_request(request):
            try:
                return call(self.retry_policy, send_once, request)
            except httpx.HTTPError as exc:
                raise self._packly_error(exc, request, deadline) from exc

    async def _asend(
        self,
        client: AsyncPacklyClient,
        request: httpx.Request,
        *,
        auth: httpx.Auth | None,
        stream: bool = False,
        body_limit: int | None = None,
    ) -> httpx.Response:
        deadline = self._start(request)

        async def send_once(request: httpx.Request) -> httpx.Response:
            deadline.apply(request, client.timeout)
            response = await _asend_through(client.transport, request, auth)
            if not stream and isinstance(response.stream, httpx.ByteStream):
                # The whole body is in memory (AiohttpTransport: it came with the headers), so
                # nothing is left to await: the sync rule reads it, without async generators.
                return _read(response, deadline, body_limit=body_limit, stream=False)
            await acheck_compressed_end(response)
            bound_body(response, deadline, asynchronous=True)
            try:
                limit = _body_limit(response, body_limit)
                if limit is not None:
                    return await aread_limited(response, limit)
                if not stream:
                    await response.aread()
                return response
            except BaseException:
                await response.aclose()
                raise

        async def attempts() -> httpx.Response:
            with timed_request(request):
                try:
                    return await acall(self.retry_policy, send_once, request)
                except httpx.HTTPError as exc:
                    raise self._packly_error(exc, request, deadline) from exc

        with deadline.active():
            response = await cancel_after(deadline.remaining(), attempts)
        if response is None:
            raise deadline.error(request)  # cancelled at the deadline, wherever the call was
        return response

    def _start(self, request: httpx.Request) -> Deadline:
        """A send's start, sync and async alike: the User-Agent on every request (token requests
        are built without a client) and the call's overall deadline."""
        request.headers.setdefault("User-Agent", user_agent())
        return Deadline.start(self._deadline_seconds)

    def _packly_error(self, exc: httpx.HTTPError, request: httpx.Request, deadline: Deadline) -> PacklyError:
        """The ``PacklyError`` for an httpx failure of ``request``: one rule for sync and async."""
        if isinstance(exc, httpx.TransportError):
            if deadline.explains(exc):
                return deadline.error(request)
            return transport_error(exc, request, proxy=self.connection.proxy_display)
        return body_error(exc, request)  # e.g. DecodingError: the body is not its Content-Encoding


def _send_through(transport: httpx.BaseTransport, request: httpx.Request, auth: httpx.Auth | None) -> httpx.Response:
    """``Client.send(request, auth=auth, stream=True)`` for the provider's requests, at a
    fraction of its cost: the auth flow driven as httpx drives it, straight on the transport.

    What the client would add and the provider never uses is left out: cookies (none kept),
    redirects (never followed), mounts (the proxy is the transport's: ``proxy_for``).
    """
    if auth is None:
        return _send_once(transport, request)
    flow = auth.sync_auth_flow(request)
    request = next(flow)
    while True:
        response = _send_once(transport, request)
        try:
            request = flow.send(response)
        except StopIteration:
            return response
        except BaseException:
            response.close()
            raise
        response.close()


async def _asend_through(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, auth: httpx.Auth | None
) -> httpx.Response:
    """``_send_through`` for coroutines."""
    if auth is None:
        return await _asend_once(transport, request)
    flow = auth.async_auth_flow(request)
    request = await flow.__anext__()
    while True:
        response = await _asend_once(transport, request)
        try:
            request = await flow.asend(response)
        except StopAsyncIteration:
            return response
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()


def _send_once(transport: httpx.BaseTransport, request: httpx.Request) -> httpx.Response:
    response = transport.handle_request(request)
    _received(request, response)
    return response


async def _asend_once(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    response = await transport.handle_async_request(request)
    _received(request, response)
    return response


def _read(response: httpx.Response, deadline: Deadline, *, body_limit: int | None, stream: bool) -> httpx.Response:
    """``response`` with its body read as the call needs it (``_body_limit``; ``stream``: not
    yet), its compressed end and the deadline checked as it is read. The one rule for a sync
    body, and for an async one already in memory."""
    check_compressed_end(response)
    bound_body(response, deadline)
    try:
        limit = _body_limit(response, body_limit)
        if limit is not None:
            return read_limited(response, limit)
        if not stream:
            response.read()
        return response
    except BaseException:
        response.close()
        raise


def _received(request: httpx.Request, response: httpx.Response) -> None:
    """What httpx's client does with each answer that the provider keeps: the response knows
    its request, and the line httpx logs for every answer (at DEBUG: Airflow keeps httpx's
    logger at WARNING as "too chatty even at info", so task logs did not show it either)."""
    response.request = request
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug(
            'HTTP Request: %s %s "%s %d %s"',
            request.method,
            request.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )


def _body_limit(response: httpx.Response, limit: int | None) -> int | None:
    """How much of ``response``'s body a send reads at once: an error body a bounded prefix
    (``MAX_ERROR_BODY_BYTES``), a success ``limit`` bytes if given (token responses), else
    ``None``: all of it (``request``) or none yet (``stream``)."""
    return MAX_ERROR_BODY_BYTES if not response.is_success else limit
