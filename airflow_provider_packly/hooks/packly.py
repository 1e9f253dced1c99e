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
import re
import ssl
import threading
import urllib.parse
import weakref
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping

import httpx
from airflow.sdk import BaseHook

from airflow_provider_packly.auth import TOKEN_CACHE, AccessToken, PacklyBearerAuth, TokenCache, TokenSource
from airflow_provider_packly.compressed import acheck_compressed_end, check_compressed_end
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyError, read_error_body, transport_error
from airflow_provider_packly.retries import RetryPolicy, attempts_made
from airflow_provider_packly.resources import (
    DIELINE_PATH,
    ORDERS_PATH,
    QUOTATION_PATH,
    OrderPager,
    PacklyOrderNotFound,
    QueryEncoder,
    bracket_encode,
    dieline_params,
    find_order,
    is_order,
    quotation_params,
    read_dieline_json,
)

__all__ = ["PacklyHook", "endpoint_path", "json_body", "raise_for_packly_status"]

_USER_AGENT = "airflow-provider-packly"


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
        self._lock = threading.Lock()

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
                    send=lambda request: self._send(self.get_client(), request, auth=None),
                    asend=self._asend_token_request,
                    cache=self._token_cache,
                    on_new_token=_mask_token,
                    aon_new_token=_amask_token,
                )
                self._auth = PacklyBearerAuth(self._tokens)
            return self._tokens

    async def _asend_token_request(self, request: httpx.Request) -> httpx.Response:
        return await self._asend(await self.aget_client(), request, auth=None)

    # -- the I/O shells: send with the retry policy; everything else is shared ------------------

    def _send(
        self, client: httpx.Client, request: httpx.Request, *, auth: httpx.Auth | None, stream: bool = False
    ) -> httpx.Response:
        def send_once(request: httpx.Request) -> httpx.Response:
            response = client.send(request, auth=auth, stream=stream)
            if stream and not response.is_success:
                response.read()  # a small error body: read it so a retry can discard the response
            return response

        try:
            return self._retry_policy.call(send_once, request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc

    async def _asend(
        self, client: httpx.AsyncClient, request: httpx.Request, *, auth: httpx.Auth | None, stream: bool = False
    ) -> httpx.Response:
        async def send_once(request: httpx.Request) -> httpx.Response:
            response = await client.send(request, auth=auth, stream=stream)
            if stream and not response.is_success:
                await response.aread()
            return response

        try:
            return await self._retry_policy.acall(send_once, request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc

    # -- clients ------------------------------------------------------------------------------

    def get_client(self) -> httpx.Client:
        """The hook's one sync client (created on first use)."""
        if self._client is not None:
            return self._client
        connection = self.get_conn()
        self._token_source(connection)
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, **_client_options(connection, _ssl_context(), sync=True))
            return self._client

    async def aget_client(self) -> httpx.AsyncClient:
        """The hook's one async client, bound to the running event loop."""
        client = self._aclient
        if client is not None and self._aclient_loop is _running_loop():
            return client
        connection = await self.aget_conn()
        self._token_source(connection)
        context = await _assl_context()
        if self.shared_async_client:
            return await _SHARED_ASYNC_CLIENTS.get(connection, self._async_transport, context)
        loop = _running_loop()
        with self._lock:
            if self._aclient is not None and self._aclient_loop is not loop:
                # A client's pool belongs to the loop that opened it; that loop is gone or busy.
                self.log.debug("Event loop changed since the async client was created; creating a new one.")
                self._aclient = None
            if self._aclient is None:
                self._aclient = httpx.AsyncClient(transport=self._async_transport, **_client_options(connection, context, sync=False))
                self._aclient_loop = loop
            return self._aclient

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
        """Close both clients (a shared async client stays open for the other hooks)."""
        self.close()
        with self._lock:
            aclient, self._aclient = self._aclient, None
        if aclient is not None:
            await aclient.aclose()

    def __enter__(self) -> PacklyHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> PacklyHook:
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
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Call ``endpoint`` (e.g. ``/v1/reseller/orders``) with a bearer token.

        :raises PacklyAPIError: Packly answered with a status that is not 2xx (after one
            token refresh if the answer was 401).
        :raises PacklyAuthError: no token could be obtained.
        :raises PacklyTransportError: Packly could not be reached.
        """
        client = self.get_client()
        request = client.build_request(
            method, endpoint_path(self.get_conn(), endpoint), params=params, json=json, data=data, headers=headers
        )
        response = self._send(client, request, auth=self._auth)
        raise_for_packly_status(response)
        return response

    async def arequest(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """``request`` for coroutines."""
        client = await self.aget_client()
        request = client.build_request(
            method, endpoint_path(await self.aget_conn(), endpoint), params=params, json=json, data=data, headers=headers
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
        request = client.build_request(method, endpoint_path(self.get_conn(), endpoint), params=params, headers=headers)
        response = self._send(client, request, auth=self._auth, stream=True)
        try:
            raise_for_packly_status(response)
            yield response
        finally:
            response.close()

    @contextlib.asynccontextmanager
    async def astream(
        self, method: str, endpoint: str, *, params: Any = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """``stream`` for coroutines (``response.aiter_bytes()``)."""
        client = await self.aget_client()
        request = client.build_request(method, endpoint_path(await self.aget_conn(), endpoint), params=params, headers=headers)
        response = await self._asend(client, request, auth=self._auth, stream=True)
        try:
            raise_for_packly_status(response)
            yield response
        finally:
            await response.aclose()

    # -- Packly's documented resources --------------------------------------------------------

    def get_dieline(
        self, article: str, material: str, width: float, depth: float, height: float, type: str = "pdf"
    ) -> bytes | dict[str, Any]:
        """A box's die-cut template: the PDF bytes, or for ``type="json"`` Packly's JSON answer
        with the decoded PDF added as ``pdf``."""
        params = dieline_params(article, material, width, depth, height, type)
        response = self.request("GET", DIELINE_PATH, params=params)
        return read_dieline_json(json_body(response)) if type == "json" else response.content

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
        return json_body(await self.arequest("GET", QUOTATION_PATH, params=quotation_params(items, shipping, encode=encode)))

    def iter_orders(self, *, sort: str = "desc", limit: int = 50) -> Iterator[dict[str, Any]]:
        """Every order, page by page (zero-based ``page``), fetched only as far as it is read."""
        pager = OrderPager(limit=limit, sort=sort)
        while not pager.done:
            yield from pager.accept(json_body(self.request("GET", ORDERS_PATH, params=pager.params())))

    async def aiter_orders(self, *, sort: str = "desc", limit: int = 50) -> AsyncIterator[dict[str, Any]]:
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
        """Obtain a new token; say where and until when, or why not (``airflow connections test``)."""
        try:
            connection = self.get_conn()
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


class _SharedAsyncClients:
    """One ``AsyncClient`` per (event loop, connection settings, transport) for opted-in hooks.

    A client's pool belongs to the loop that opened it, hence one set per loop. Each set is
    closed by an async generator registered with its loop: ``loop.shutdown_asyncgens()`` (run
    by ``asyncio.run`` and at triggerer shutdown) finalises it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[dict[Any, httpx.AsyncClient], Any]] = (
            weakref.WeakKeyDictionary()
        )

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
            client = clients[key] = httpx.AsyncClient(transport=transport, **_client_options(connection, context, sync=False))
        return client

    async def aclose_for_running_loop(self) -> None:
        with self._lock:
            entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()


async def _close_at_loop_shutdown(clients: dict[Any, httpx.AsyncClient]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for client in list(clients.values()):
            await client.aclose()
        clients.clear()


_SHARED_ASYNC_CLIENTS = _SharedAsyncClients()


# -- shared rules (sync and async alike) --------------------------------------------------------


def retry_policy_for(connection: PacklyConnection) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=connection.retry_max_attempts,
        max_seconds=connection.retry_max_seconds,
        backoff=connection.retry_backoff_seconds,
        backoff_max=connection.retry_backoff_max_seconds,
        retry_after_max=connection.retry_after_max_seconds,
    )


_ssl_lock = threading.Lock()
_ssl: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process, shared by every client.

    httpx builds a new one per client otherwise (loading the CA bundle: about 15 ms measured),
    which would stall an event loop each time a hook opens its first async client.
    """
    global _ssl
    with _ssl_lock:
        if _ssl is None:
            _ssl = httpx.create_ssl_context()  # certifi's CAs, or SSL_CERT_FILE/SSL_CERT_DIR
        return _ssl


async def _assl_context() -> ssl.SSLContext:
    """``_ssl_context`` from a coroutine: the one-time build runs in a worker thread."""
    if _ssl is not None:
        return _ssl
    import anyio.to_thread

    return await anyio.to_thread.run_sync(_ssl_context)


def _client_options(connection: PacklyConnection, context: ssl.SSLContext, *, sync: bool) -> dict[str, Any]:
    return {
        # A gzip/deflate body cut short but re-framed is an error, not a shorter success.
        "event_hooks": {"response": [check_compressed_end if sync else acheck_compressed_end]},
        "base_url": connection.base_url,
        "verify": context,
        "timeout": httpx.Timeout(**connection.phase_timeouts()),
        "headers": {"Accept": "application/json", "User-Agent": _USER_AGENT},
        # A redirect could carry the bearer token to another host; Packly documents none.
        "follow_redirects": False,
    }


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


def raise_for_packly_status(response: httpx.Response) -> None:
    """Raise ``PacklyAPIError`` with Packly's envelope parsed if ``response`` is not 2xx."""
    if response.is_success:
        return
    response.read()
    body = read_error_body(response.content, response.headers.get("content-type", ""))
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
    except ValueError:
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
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(token.value)
    except Exception:  # masking is best effort; the provider never logs tokens anyway
        pass


async def _amask_token(token: AccessToken) -> None:
    """``_mask_token`` on an event loop: the sync call would block it on a supervisor round trip."""
    if next(_masked_tokens) >= MAX_MASKED_TOKENS:
        return
    try:
        from airflow.sdk import log as sdk_log

        amask_secret = getattr(sdk_log, "amask_secret", None)
        if amask_secret is not None:  # Airflow 3.3+; 3.2 has only the blocking call, so skip it there
            await amask_secret(token.value)
    except Exception:
        pass


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
