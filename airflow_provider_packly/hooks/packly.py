"""``PacklyHook``: authenticated calls to the Packly REST API, sync and async.

The hook translates Airflow concepts (a connection id, the secrets masker) into the plain
pieces underneath: ``PacklyConnection`` (settings), ``TokenSource``/``TOKEN_CACHE`` (tokens)
and ``PacklyBearerAuth`` (the 401 flow). Sync calls use one ``httpx.Client`` and async calls
one ``httpx.AsyncClient``, each created on first use, reused for every call (one connection
pool) and closed by ``close()``/``aclose()`` or by leaving a ``with``/``async with`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import ssl
import threading
import urllib.parse
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import anyio
import httpx
from airflow.sdk import BaseHook

from airflow_provider_packly.auth import (
    MAX_TOKEN_RESPONSE_BYTES,
    TOKEN_CACHE,
    AccessToken,
    PacklyBearerAuth,
    TokenCache,
    TokenSource,
)
from airflow_provider_packly.compressed import acheck_compressed_end, check_compressed_end
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import (
    PacklyAPIError,
    PacklyError,
    body_error,
    read_error_body,
    redactor_for,
    transport_error,
)
from airflow_provider_packly.limits import MAX_ERROR_BODY_BYTES, Deadline, aread_limited, bound_body, read_limited
from airflow_provider_packly.resources import (
    DIELINE_PATH,
    ORDERS_PATH,
    QUOTATION_PATH,
    OrderPager,
    PacklyOrderNotFound,
    PacklyValidationError,
    QueryEncoder,
    bracket_encode,
    dieline_params,
    find_order,
    is_order,
    quotation_params,
    read_dieline_json,
)
from airflow_provider_packly.retries import RetryPolicy, attempts_made
from airflow_provider_packly.tls import SSL_CONTEXTS as _SSL_CONTEXTS
from airflow_provider_packly.tls import unverified_tls_warning

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

#: What ``request``/``arequest`` take as ``params``: a mapping, or (key, value) pairs when a key
#: repeats or the order matters (``quotation_params`` builds pairs).
QueryParams = Mapping[str, Any] | Sequence[tuple[str, Any]]

__all__ = ["PacklyHook", "endpoint_path", "json_body", "raise_for_packly_status"]

_USER_AGENT = "airflow-provider-packly"
#: A standard logger (as in ``retries``): Airflow routes it into task and trigger logs.
_log = logging.getLogger(__name__)


class PacklyHook(BaseHook):
    """Interact with the Packly REST API.

    :param packly_conn_id: The ``packly`` connection to use.
    :param connection: Settings to use instead of looking ``packly_conn_id`` up (outside Airflow).
    :param transport: An ``httpx`` transport for the sync client (tests use ``httpx.MockTransport``).
    :param async_transport: The same for the async client.
    :param shared_async_client: Use one ``AsyncClient`` per event loop and connection settings,
        shared with every other hook that asks for it, instead of one per hook. For triggers: a
        triggerer with a thousand waiting sensors then keeps one connection pool, not a thousand.
        The shared client is closed when its event loop shuts down its async generators (as
        ``asyncio.run`` and the triggerer do), or by ``PacklyHook.aclose_shared_clients()``.
    """

    conn_name_attr = "packly_conn_id"
    default_conn_name = "packly_default"
    conn_type = "packly"
    hook_name = "Packly"

    def __init__(
        self,
        packly_conn_id: str = default_conn_name,
        *,
        connection: PacklyConnection | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        token_cache: TokenCache = TOKEN_CACHE,
        shared_async_client: bool = False,
    ) -> None:
        super().__init__()
        self.shared_async_client = shared_async_client
        self.packly_conn_id = packly_conn_id
        self._connection = connection
        self._transport = transport
        self._async_transport = async_transport
        self._token_cache = token_cache
        self._tokens: TokenSource | None = None
        self._auth: PacklyBearerAuth | None = None
        self._retry_policy = RetryPolicy()
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        #: Closes ``_aclient`` when its event loop shuts down (see ``aget_client``).
        self._aclient_closer: AsyncGenerator[None, None] | None = None
        self._lock = threading.Lock()
        self._warned = False
        _LIVE_HOOKS.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(packly_conn_id={self.packly_conn_id!r})"

    # -- connection settings ------------------------------------------------------------------

    def get_conn(self) -> PacklyConnection:
        """The connection's settings, read and checked once."""
        if self._connection is None:
            self._connection = PacklyConnection.from_airflow(self.get_connection(self.packly_conn_id))
        return self._connection

    async def aget_conn(self) -> PacklyConnection:
        """``get_conn`` without a sync lookup on the event loop (it fails in the triggerer)."""
        if self._connection is None:
            self._connection = PacklyConnection.from_airflow(await self.aget_connection(self.packly_conn_id))
        return self._connection

    def _token_source(self, connection: PacklyConnection) -> TokenSource:
        if self._tokens is not None:
            return self._tokens
        with self._lock:
            if self._tokens is None:
                self._retry_policy = retry_policy_for(connection)
                self._tokens = TokenSource(
                    connection,
                    send=lambda request: self._send(
                        self.get_client(), request, auth=None, body_limit=MAX_TOKEN_RESPONSE_BYTES
                    ),
                    asend=self._asend_token_request,
                    cache=self._token_cache,
                    on_new_token=_mask_token,
                    aon_new_token=_amask_token,
                )
                self._auth = PacklyBearerAuth(self._tokens)
            return self._tokens

    async def _asend_token_request(self, request: httpx.Request) -> httpx.Response:
        return await self._asend(await self.aget_client(), request, auth=None, body_limit=MAX_TOKEN_RESPONSE_BYTES)

    def _deadline(self) -> Deadline:
        """A new call's overall deadline (``PacklyConnection.request_deadline``)."""
        connection = self._connection
        assert connection is not None, "the client is created, with the connection, before any send"
        return Deadline.start(connection.request_deadline())

    # -- the I/O shells: send with the retry policy; everything else is shared ------------------

    # Every send streams, so that the shared rules decide how much of a body is read:
    # ``_body_limit`` (an error body, a token response: a bounded prefix), the whole of it
    # (``request``), or none yet (``stream``). The body is read under the call's deadline.

    def _send(
        self,
        client: httpx.Client,
        request: httpx.Request,
        *,
        auth: httpx.Auth | None,
        stream: bool = False,
        body_limit: int | None = None,
    ) -> httpx.Response:
        deadline = self._deadline()

        def send_once(request: httpx.Request) -> httpx.Response:
            deadline.apply(request, client.timeout)
            response = client.send(request, auth=auth, stream=True)
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

        with deadline.active():
            try:
                return self._retry_policy.call(send_once, request)
            except httpx.HTTPError as exc:
                raise self._packly_error(exc, request, deadline) from exc

    async def _asend(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        *,
        auth: httpx.Auth | None,
        stream: bool = False,
        body_limit: int | None = None,
    ) -> httpx.Response:
        deadline = self._deadline()

        async def send_once(request: httpx.Request) -> httpx.Response:
            deadline.apply(request, client.timeout)
            response = await client.send(request, auth=auth, stream=True)
            bound_body(response, deadline)
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

        with deadline.active(), anyio.move_on_after(deadline.remaining()):
            try:
                return await self._retry_policy.acall(send_once, request)
            except httpx.HTTPError as exc:
                raise self._packly_error(exc, request, deadline) from exc
        raise deadline.error(request)  # cancelled at the deadline, wherever the call was

    def _packly_error(self, exc: httpx.HTTPError, request: httpx.Request, deadline: Deadline) -> PacklyError:
        """The ``PacklyError`` for an httpx failure of ``request``: one rule for sync and async."""
        if isinstance(exc, httpx.TransportError):
            if deadline.explains(exc):
                return deadline.error(request)
            proxy = self._connection.proxy_display if self._connection is not None else None
            return transport_error(exc, request, proxy=proxy)
        return body_error(exc, request)  # e.g. DecodingError: the body is not its Content-Encoding

    # -- clients ------------------------------------------------------------------------------

    def get_client(self) -> httpx.Client:
        """The hook's one sync client (created on first use)."""
        if self._client is not None:
            return self._client
        connection = self.get_conn()
        self._token_source(connection)
        context = _SSL_CONTEXTS.get(connection.tls, connection.where)
        with self._lock:
            if self._client is None:
                if not self._warned:
                    self._warn_about_settings(connection)
                    _mask_proxy_credentials(connection)
                self._client = httpx.Client(
                    transport=self._transport, **_client_options(connection, context, sync=True)
                )
            return self._client

    async def aget_client(self) -> httpx.AsyncClient:
        """The hook's one async client, bound to the running event loop."""
        client = self._aclient
        if client is not None and self._aclient_loop is _running_loop():
            return client
        connection = await self.aget_conn()
        self._token_source(connection)
        context = await _SSL_CONTEXTS.aget(connection.tls, connection.where)
        if not self._warned:  # once per hook: shared-client hooks come through here on every call
            self._warn_about_settings(connection)
            await _amask_proxy_credentials(connection)
        if self.shared_async_client:
            return await _SHARED_ASYNC_CLIENTS.get(connection, self._async_transport, context)
        loop = _running_loop()
        created = None
        with self._lock:
            stale = None
            if self._aclient is not None and self._aclient_loop is not loop:
                # A client's pool belongs to the loop that opened it; that loop is gone or busy.
                self.log.debug("Event loop changed since the async client was created; creating a new one.")
                stale = (self._aclient, self._aclient_loop, self._aclient_closer)
                self._aclient = self._aclient_closer = None
            if self._aclient is None:
                created = self._aclient = httpx.AsyncClient(
                    transport=self._async_transport, **_client_options(connection, context, sync=False)
                )
                self._aclient_loop = loop
            client = self._aclient
        if stale is not None:
            _close_elsewhere(*stale)
        if created is not None:
            # Closed when this loop shuts down its async generators (``asyncio.run`` does), so a
            # hook used under several ``asyncio.run`` calls leaves no client open on a dead loop.
            closer = _close_at_loop_shutdown({None: created})
            await closer.__anext__()
            with self._lock:
                if self._aclient is created:
                    self._aclient_closer = closer
        return client

    def _warn_about_settings(self, connection: PacklyConnection) -> None:
        """Log, once per hook, a setting that works but weakens security (verification off)."""
        if self._warned:
            return
        self._warned = True
        warning = unverified_tls_warning(connection)
        if warning:
            _log.warning("%s", warning)

    def close(self) -> None:
        """Close the sync client (the async one needs ``aclose``)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @staticmethod
    async def aclose_shared_clients() -> None:
        """Close the running event loop's shared async clients (see ``shared_async_client``)."""
        await _SHARED_ASYNC_CLIENTS.aclose_for_running_loop()

    async def aclose(self) -> None:
        """Close both clients (a shared async client stays open for the other hooks).

        An async client opened on another event loop is closed there if that loop still runs;
        one whose loop has ended was closed when that loop shut down (``aget_client``).
        """
        self.close()
        with self._lock:
            aclient, loop, closer = self._aclient, self._aclient_loop, self._aclient_closer
            self._aclient = self._aclient_closer = None
        if aclient is None:
            return
        if loop is not _running_loop():
            _close_elsewhere(aclient, loop, closer)
        elif closer is not None:
            await closer.aclose()  # its ``finally`` closes the client
        else:
            await aclient.aclose()

    def _forget_clients_after_fork(self) -> None:
        """In a forked child: drop (never close) the parent's clients; the next call opens new ones.

        The child's copies of the parent's keep-alive sockets must not be used (both processes
        would read and write one connection) nor shut down (that would cut the parent's). They
        are only dropped: the child's copy of each descriptor is released when collected.
        """
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._client = None
        self._aclient = self._aclient_closer = None
        self._aclient_loop = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- tokens -------------------------------------------------------------------------------

    def get_token(self) -> str:
        """The current bearer token: the cached one, or a new one if it is due for refresh."""
        self.get_client()
        return self._require_tokens().get().value

    async def aget_token(self) -> str:
        """``get_token`` for coroutines."""
        await self.aget_client()
        return (await self._require_tokens().aget()).value

    def _require_tokens(self) -> TokenSource:
        assert self._tokens is not None, "get_client()/aget_client() creates the token source"
        return self._tokens

    # -- calls --------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: QueryParams | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Call ``endpoint`` (e.g. ``/v1/reseller/orders``) with a bearer token.

        A successful answer's whole body is read into memory (an error body only up to
        64 KiB): for large downloads use ``stream``, as the dieline operator does. The call,
        retries and body included, ends by the connection's ``request_deadline``.

        :raises PacklyAPIError: Packly answered with a status that is not 2xx (after one
            token refresh if the answer was 401).
        :raises PacklyAuthError: no token could be obtained.
        :raises PacklyTransportError: Packly could not be reached.
        """
        client = self.get_client()
        request = _build_request(
            client,
            method,
            endpoint_path(self.get_conn(), endpoint),
            params=params,
            json=json,
            data=data,
            headers=headers,
        )
        response = self._send(client, request, auth=self._auth)
        raise_for_packly_status(response)
        return response

    async def arequest(
        self,
        method: str,
        endpoint: str,
        *,
        params: QueryParams | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """``request`` for coroutines."""
        client = await self.aget_client()
        request = _build_request(
            client,
            method,
            endpoint_path(await self.aget_conn(), endpoint),
            params=params,
            json=json,
            data=data,
            headers=headers,
        )
        response = await self._asend(client, request, auth=self._auth)
        raise_for_packly_status(response)
        return response

    @contextlib.contextmanager
    def stream(
        self, method: str, endpoint: str, *, params: Any = None, headers: Mapping[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """An authenticated call whose body is read in chunks (``response.iter_bytes()``)."""
        client = self.get_client()
        request = _build_request(
            client, method, endpoint_path(self.get_conn(), endpoint), params=params, headers=headers
        )
        response = self._send(client, request, auth=self._auth, stream=True)
        try:
            raise_for_packly_status(response)
            yield response
        except httpx.HTTPError as exc:  # raised by iter_bytes() & co. in the caller's block
            raise body_error(exc, request) from exc
        finally:
            response.close()

    @contextlib.asynccontextmanager
    async def astream(
        self, method: str, endpoint: str, *, params: Any = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """``stream`` for coroutines (``response.aiter_bytes()``)."""
        client = await self.aget_client()
        request = _build_request(
            client, method, endpoint_path(await self.aget_conn(), endpoint), params=params, headers=headers
        )
        response = await self._asend(client, request, auth=self._auth, stream=True)
        try:
            raise_for_packly_status(response)
            yield response
        except httpx.HTTPError as exc:
            raise body_error(exc, request) from exc
        finally:
            await response.aclose()

    # -- Packly's documented resources --------------------------------------------------------

    @overload
    def get_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: Literal["pdf"] = "pdf"
    ) -> bytes: ...
    @overload
    def get_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: Literal["json"]
    ) -> dict[str, Any]: ...
    @overload
    def get_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: str
    ) -> bytes | dict[str, Any]: ...
    def get_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: str = "pdf"
    ) -> bytes | dict[str, Any]:
        """A box's die-cut template: the PDF bytes, or for ``type="json"`` Packly's JSON answer
        with the decoded PDF added as ``pdf``.

        Typed per ``type`` (overloads): a literal ``"pdf"`` (the default) gives ``bytes``, so
        ``Path(...).write_bytes(hook.get_dieline(...))`` type-checks; ``"json"`` gives a dict.
        """
        params = dieline_params(article, material, width, depth, height, type)
        response = self.request("GET", DIELINE_PATH, params=params)
        return read_dieline_json(json_body(response)) if type == "json" else response.content

    @overload
    async def aget_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: Literal["pdf"] = "pdf"
    ) -> bytes: ...
    @overload
    async def aget_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: Literal["json"]
    ) -> dict[str, Any]: ...
    @overload
    async def aget_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: str
    ) -> bytes | dict[str, Any]: ...
    async def aget_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: str = "pdf"
    ) -> bytes | dict[str, Any]:
        """``get_dieline`` for coroutines."""
        params = dieline_params(article, material, width, depth, height, type)
        response = await self.arequest("GET", DIELINE_PATH, params=params)
        return read_dieline_json(json_body(response)) if type == "json" else response.content

    def get_quotation(
        self, items: Iterable[Mapping[str, Any]], shipping: str | None = None, *, encode: QueryEncoder = bracket_encode
    ) -> Any:
        """Prices for ``items`` (Packly's answer as JSON; its shape past ``request`` is undocumented).

        ``encode`` puts the items in the query string; Packly does not document how, and the
        default is the common bracket convention ``items[0][article]=...``.
        """
        return json_body(self.request("GET", QUOTATION_PATH, params=quotation_params(items, shipping, encode=encode)))

    async def aget_quotation(
        self, items: Iterable[Mapping[str, Any]], shipping: str | None = None, *, encode: QueryEncoder = bracket_encode
    ) -> Any:
        """``get_quotation`` for coroutines."""
        return json_body(
            await self.arequest("GET", QUOTATION_PATH, params=quotation_params(items, shipping, encode=encode))
        )

    def iter_orders(self, *, sort: str = "desc", limit: int = 50) -> Generator[dict[str, Any], None, None]:
        """Every order, page by page (zero-based ``page``), fetched only as far as it is read."""
        pager = OrderPager(limit=limit, sort=sort)
        while not pager.done:
            yield from pager.accept(json_body(self.request("GET", ORDERS_PATH, params=pager.params())))

    async def aiter_orders(self, *, sort: str = "desc", limit: int = 50) -> AsyncGenerator[dict[str, Any], None]:
        """``iter_orders`` for coroutines."""
        pager = OrderPager(limit=limit, sort=sort)
        while not pager.done:
            for order in pager.accept(json_body(await self.arequest("GET", ORDERS_PATH, params=pager.params()))):
                yield order

    def get_order(self, order_id: str, *, sort: str = "desc", limit: int = 50) -> dict[str, Any]:
        """One order, found by paging (Packly documents no by-id endpoint)."""
        order = find_order(self.iter_orders(sort=sort, limit=limit), order_id)
        if order is None:
            raise _order_not_found(order_id)
        return order

    async def aget_order(self, order_id: str, *, sort: str = "desc", limit: int = 50) -> dict[str, Any]:
        """``get_order`` for coroutines."""
        async for order in self.aiter_orders(sort=sort, limit=limit):
            if is_order(order, order_id):
                return dict(order)
        raise _order_not_found(order_id)

    # -- connection test ----------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Obtain a new token; say where and until when, or why not.

        Airflow's REST API and UI test a copy of the connection stored under a random id
        (``get_random_string()``: eight letters and digits, which a real id can also be), so
        no message here names the connection id: the caller knows which connection it tests.
        ``airflow connections test`` prints only success or the failure message.
        """
        try:
            if self._connection is None:
                self._connection = PacklyConnection.from_airflow(self.get_connection(self.packly_conn_id), named=False)
            connection = self._connection
            self.get_client()
            tokens = self._require_tokens()
            token = tokens.fetch_uncached()
        except PacklyError as exc:
            return False, str(exc)
        finally:
            self.close()
        import pendulum

        valid_until = pendulum.now("UTC").add(seconds=int(token.lifetime)).to_iso8601_string()
        return True, (
            f"Packly {connection.environment} environment at {connection.base_url} issued an access token "
            f"to client ID {connection.client_id!r}, valid until {valid_until}."
        )


def _body_limit(response: httpx.Response, limit: int | None) -> int | None:
    """How much of ``response``'s body a send reads at once: an error body a bounded prefix
    (``MAX_ERROR_BODY_BYTES``), a success ``limit`` bytes if given (token responses), else
    ``None``: all of it (``request``) or none yet (``stream``)."""
    return MAX_ERROR_BODY_BYTES if not response.is_success else limit


def _close_elsewhere(
    client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop | None, closer: AsyncGenerator[None, None] | None
) -> None:
    """Close an async client that belongs to another event loop, without awaiting it here.

    Awaiting it on this loop would fail (``Event loop is closed``) or touch another loop's
    sockets. Still running (in another thread): closed there. Ended: ``asyncio.run`` already
    closed it at that loop's shutdown; otherwise its sockets are left to the collector.
    """
    if client.is_closed or loop is None or loop.is_closed() or not loop.is_running():
        return
    asyncio.run_coroutine_threadsafe(closer.aclose() if closer is not None else client.aclose(), loop)


class _SharedAsyncClients:
    """One ``AsyncClient`` per (event loop, connection settings, transport) for opted-in hooks.

    A client's pool belongs to the loop that opened it, hence one set per loop. Each set is
    closed by an async generator registered with its loop: ``loop.shutdown_asyncgens()`` (run
    by ``asyncio.run`` and at triggerer shutdown) finalises it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[dict[Any, httpx.AsyncClient], AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    async def get(
        self, connection: PacklyConnection, transport: httpx.AsyncBaseTransport | None, context: ssl.SSLContext
    ) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
        if entry is None:
            clients: dict[Any, httpx.AsyncClient] = {}
            closer = _close_at_loop_shutdown(clients)
            await closer.__anext__()  # registers it with the loop's async-generator hooks
            with self._lock:
                entry = self._by_loop.setdefault(loop, (clients, closer))
        clients = entry[0]
        key = (connection, transport)
        client = clients.get(key)
        if client is None or client.is_closed:
            client = clients[key] = httpx.AsyncClient(
                transport=transport, **_client_options(connection, context, sync=False)
            )
        return client

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's shared clients without closing them (see the hook)."""
        self._lock = threading.Lock()
        self._by_loop = weakref.WeakKeyDictionary()

    async def aclose_for_running_loop(self) -> None:
        with self._lock:
            entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()


async def _close_at_loop_shutdown(clients: dict[Any, httpx.AsyncClient]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        for client in list(clients.values()):
            await client.aclose()
        clients.clear()


_SHARED_ASYNC_CLIENTS = _SharedAsyncClients()

#: Every hook alive in this process (weakly: a hook is never kept alive by this), so that a
#: forked child can drop the clients it inherited.
_LIVE_HOOKS: weakref.WeakSet[PacklyHook] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """``os.fork()`` copies the clients' pools (their sockets are the parent's connections) and
    any lock another thread held, but not the threads: start the child with none of them."""
    _SSL_CONTEXTS.forget_after_fork()
    _SHARED_ASYNC_CLIENTS.forget_after_fork()
    for hook in list(_LIVE_HOOKS):
        hook._forget_clients_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- shared rules (sync and async alike) --------------------------------------------------------


def retry_policy_for(connection: PacklyConnection) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=connection.retry_max_attempts,
        max_seconds=connection.retry_max_seconds,
        backoff=connection.retry_backoff_seconds,
        backoff_max=connection.retry_backoff_max_seconds,
        retry_after_max=connection.retry_after_max_seconds,
    )


def _client_options(connection: PacklyConnection, context: ssl.SSLContext, *, sync: bool) -> dict[str, Any]:
    """Options of every client, sync and async: ``context`` is the shared one for the
    connection's TLS settings (``tls.SSL_CONTEXTS``)."""
    options: dict[str, Any] = {
        # A gzip/deflate body cut short but re-framed is an error, not a shorter success.
        "event_hooks": {"response": [check_compressed_end if sync else acheck_compressed_end]},
        "base_url": connection.base_url,
        "verify": context,
        "timeout": httpx.Timeout(**connection.phase_timeouts()),
        "headers": {"Accept": "application/json", "User-Agent": _USER_AGENT},
        # A redirect could carry the bearer token to another host; Packly documents none.
        "follow_redirects": False,
    }
    if connection.proxy_url is not None:
        # The connection's proxy replaces HTTP(S)_PROXY/ALL_PROXY/NO_PROXY; without one, httpx
        # reads those environment variables as usual (trust_env).
        options["proxy"] = connection.proxy_url
    return options


def endpoint_path(connection: PacklyConnection, endpoint: str) -> str:
    """``endpoint`` as a path under the connection's base URL, dot segments resolved.

    A full URL is accepted only under the base URL: the bearer token must never be sent to
    another host. Only the path is looked at (a query may hold a URL: ``?next=https://...``).
    ``.`` and ``..`` segments, also percent-encoded (``%2e%2e``), are resolved here, and an
    endpoint whose ``..`` would climb above the base URL's path is refused: the server (or a
    proxy) would resolve them otherwise, and reach paths the connection does not name.
    """
    cut = min((i for i in (endpoint.find("?"), endpoint.find("#")) if i >= 0), default=len(endpoint))
    path, rest = endpoint[:cut], endpoint[cut:]
    if "://" in path:
        if not (path == connection.base_url or path.startswith(connection.base_url + "/")):
            raise PacklyError(
                f"Endpoint {endpoint!r} is not under the connection's Base URL {connection.base_url!r}; "
                "give a path such as '/v1/reseller/orders' so the token is only sent to Packly."
            )
        path = path[len(connection.base_url) :]
    return _resolve_dot_segments(path.lstrip("/"), endpoint, connection) + rest


def _resolve_dot_segments(path: str, endpoint: str, connection: PacklyConnection) -> str:
    """``/`` + ``path`` with ``.``/``..`` segments resolved (RFC 3986 5.2.4), plain or percent-encoded."""
    kept: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        decoded = _fully_unquoted(segment)
        last = index == len(segments) - 1
        if decoded in (".", ".."):
            if decoded == "..":
                if not kept:
                    raise _outside_base(endpoint, connection)
                kept.pop()
            if last:
                kept.append("")  # "a/b/.." is "a/", as in RFC 3986
            continue
        if any(part in (".", "..") for part in re.split(r"[/\\]", decoded)):
            # "..%2F.." or "..%5C": a server that decodes the slash would climb with it.
            raise _outside_base(endpoint, connection)
        kept.append(segment)
    return "/" + "/".join(kept)


def _fully_unquoted(segment: str) -> str:
    """``segment`` percent-decoded until it no longer changes (``%252e`` is a dot to a server
    that decodes twice)."""
    for _ in range(4):
        decoded = urllib.parse.unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def _outside_base(endpoint: str, connection: PacklyConnection) -> PacklyError:
    base_path = urllib.parse.urlsplit(connection.base_url).path or "/"
    return PacklyError(
        f"Endpoint {endpoint!r} leads outside the connection's Base URL path {base_path!r} (its '..' segments, "
        "plain or percent-encoded, climb above it); give a path under it such as '/v1/reseller/orders'."
    )


def _build_request(client: httpx.Client | httpx.AsyncClient, method: str, url: str, **options: Any) -> httpx.Request:
    """``client.build_request``, refusing what httpx cannot send as a ``PacklyValidationError``:
    an endpoint holding CR/LF, a header value that is not ASCII (never quoted: it may be a secret).

    The error is raised outside the ``except`` block, so it has no ``__context__``: httpx's own
    frames hold a half-built URL whose ``repr`` fails in a traceback printed with its locals.
    """
    try:
        return client.build_request(method, url, **options)
    except httpx.InvalidURL as exc:
        problem = (
            f"Endpoint {url!r} is not a URL path that can be sent ({exc}); give a path such as "
            "'/v1/reseller/orders', without spaces or control characters."
        )
    except UnicodeEncodeError:
        problem = (
            f"A header of {method} {url!r} holds characters that are not ASCII, which HTTP headers cannot "
            "carry; its value is not shown. Encode it (e.g. percent-encoding) or leave it out."
        )
    raise PacklyValidationError(problem)


def raise_for_packly_status(response: httpx.Response) -> None:
    """Raise ``PacklyAPIError`` with Packly's envelope parsed if ``response`` is not 2xx."""
    if response.is_success:
        return
    response.read()
    # The body may echo the request's credentials: the token it carried, the connection's secrets.
    body = read_error_body(response.content, response.headers.get("content-type", ""), redactor_for(response.request))
    raise PacklyAPIError.from_body(
        http_status=response.status_code,
        method=response.request.method,
        path=response.request.url.path,
        body=body,
        attempts=attempts_made(response),
    )


def json_body(response: httpx.Response) -> Any:
    """The body as JSON, or a ``PacklyError`` that says what it was instead."""
    try:
        return response.json()
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise PacklyError(
            f"Packly answered {response.request.method} {response.request.url.path} with HTTP "
            f"{response.status_code} but the body was not JSON ({kind}, {len(response.content)} bytes)."
        ) from None


def _order_not_found(order_id: str) -> PacklyOrderNotFound:
    return PacklyOrderNotFound(
        f"No Packly order with id {order_id!r} was found in /v1/reseller/orders; check the id and the "
        "connection's environment (sandbox and live orders are separate)."
    )


#: Airflow's secrets masker keeps every secret it is given and slows with each one
#: (docs/benchmarks.md: 0.16 ms to add a secret with 1 stored, 19 ms with 1,000, paid on the
#: event loop in a triggerer). A long-lived process refreshing tokens for weeks stops
#: registering after this many: registration is defence in depth only, the provider never
#: logs a token.
MAX_MASKED_TOKENS = 100
_masked_tokens = itertools.count()


def _mask_token(token: AccessToken) -> None:
    """Defence in depth: Airflow's masker hides the token if anything else ever logs it."""
    if next(_masked_tokens) >= MAX_MASKED_TOKENS:
        return
    _mask(token.value, "access token")


async def _amask_token(token: AccessToken) -> None:
    """``_mask_token`` on an event loop: the sync call would block it on a supervisor round trip."""
    if next(_masked_tokens) >= MAX_MASKED_TOKENS:
        return
    await _amask(token.value, "access token")


def _mask(value: str, what: str) -> None:
    """Give ``value`` to Airflow's secret masker. Best effort: masking is defence in depth (the
    provider never logs secrets), so a failure of it must not fail the call; it is logged at
    DEBUG by its type only (its message could hold the value)."""
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception as exc:  # noqa: BLE001 - best effort by design, see the docstring
        _log.debug("Could not give the %s to Airflow's secret masker (%s).", what, type(exc).__name__)


async def _amask(value: str, what: str) -> None:
    """``_mask`` on an event loop: the sync call would block it on a supervisor round trip."""
    try:
        from airflow.sdk import log as sdk_log

        amask_secret = getattr(sdk_log, "amask_secret", None)
        if amask_secret is not None:  # Airflow 3.3+; 3.2 has only the blocking call, so skip it there
            await amask_secret(value)
    except Exception as exc:  # noqa: BLE001 - best effort by design, see _mask
        _log.debug("Could not give the %s to Airflow's secret masker (%s).", what, type(exc).__name__)


#: Digests of the proxy passwords already given to the masker: each costs a round trip to the
#: task supervisor, and a triggerer's many hooks share one proxy.
_masked_proxy_passwords: set[str] = set()


def _proxy_password(connection: PacklyConnection) -> str | None:
    """The proxy password not yet registered with the masker in this process, else ``None``."""
    if connection.proxy_url is None:
        return None
    import hashlib
    from urllib.parse import unquote, urlsplit

    password = urlsplit(connection.proxy_url).password
    if not password:
        return None
    password = unquote(password)
    digest = hashlib.sha256(password.encode()).hexdigest()
    if digest in _masked_proxy_passwords:
        return None
    _masked_proxy_passwords.add(digest)
    return password


def _mask_proxy_credentials(connection: PacklyConnection) -> None:
    """Defence in depth: the proxy's password is never logged, and Airflow's masker hides it
    if anything else ever does (its extra key cannot be one Airflow hides by name)."""
    password = _proxy_password(connection)
    if password is None:
        return
    _mask(password, "proxy password")


async def _amask_proxy_credentials(connection: PacklyConnection) -> None:
    """``_mask_proxy_credentials`` on an event loop (skipped on Airflow 3.2, as for tokens)."""
    password = _proxy_password(connection)
    if password is None:
        return
    await _amask(password, "proxy password")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
