"""``PacklyHook``: authenticated calls to the Packly REST API, sync and async.

The hook is the Airflow-facing layer: it looks the connection up (``PacklyConnection``),
then hands the plain pieces underneath their parts. ``_http.PacklyHttp`` holds the clients
and sends (one sync ``httpx.Client``, one async ``httpx.AsyncClient`` per event loop, each
created on first use, reused for every call and closed by ``close()``/``aclose()`` or by
leaving a ``with``/``async with`` block; async calls go over aiohttp underneath, see
``docs/transports.md``); ``auth.TokenSource``/``TOKEN_CACHE`` fetch tokens
through it and ``auth.PacklyBearerAuth`` runs the 401 flow. Calls flow one way: hook -> auth
-> I/O shell, and hook -> I/O shell.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

import httpx
from airflow.sdk import BaseHook

from airflow_provider_packly._http import (
    SHARED_ASYNC_CLIENTS,
    PacklyHttp,
    RequestOptions,
    checked_stream,
    endpoint_path,
    json_body,
    raise_for_packly_status,
    reply_of,
    retry_policy_for,
)
from airflow_provider_packly._http.clients import forget_after_fork
from airflow_provider_packly._http.masking import amask_token, mask_token
from airflow_provider_packly.auth import TOKEN_CACHE, PacklyBearerAuth, TokenCache, TokenSource
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.core.api import (
    DIELINE,
    ORDERS,
    QUOTATION,
    Endpoint,
    OrderPager,
    QueryEncoder,
    bracket_encode,
    find_order,
    is_order,
    order_not_found,
)
from airflow_provider_packly.exceptions import PacklyError

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack  # typing.Self and Unpack are Python 3.11+

__all__ = ["PacklyHook", "endpoint_path", "json_body", "raise_for_packly_status"]

_Args = ParamSpec("_Args")
_Result = TypeVar("_Result")


class PacklyHook(BaseHook):
    """Interact with the Packly REST API.

    :param packly_conn_id: The ``packly`` connection to use.
    :param connection: Settings to use instead of looking ``packly_conn_id`` up (outside Airflow).
    :param transport: An ``httpx`` transport for the sync client (tests use ``httpx.MockTransport``);
        it replaces the whole network layer, the connection's proxy and TLS settings included.
    :param async_transport: The same for the async client (default: the provider's
        ``AiohttpTransport``).
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
        #: The I/O shell, token source and 401 flow, created together once the settings are known.
        self._io: PacklyHttp | None = None
        self._tokens: TokenSource | None = None
        self._auth: PacklyBearerAuth | None = None
        self._lock = threading.Lock()
        forget_after_fork(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(packly_conn_id={self.packly_conn_id!r})"

    # -- connection settings and the pieces underneath ------------------------------------------

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

    def _shell(self, connection: PacklyConnection) -> PacklyHttp:
        """The I/O shell, with the token source and auth flow that send through it."""
        if self._io is not None:
            return self._io
        with self._lock:
            if self._io is None:
                io = PacklyHttp(
                    connection,
                    retry_policy=retry_policy_for(connection),
                    transport=self._transport,
                    async_transport=self._async_transport,
                    shared_async_client=self.shared_async_client,
                )
                self._tokens = TokenSource(
                    connection,
                    send=io.send_token_request,
                    asend=io.asend_token_request,
                    cache=self._token_cache,
                    on_new_token=mask_token,
                    aon_new_token=amask_token,
                )
                self._auth = PacklyBearerAuth(self._tokens)
                self._io = io
            return self._io

    def _forget_after_fork(self) -> None:
        """In a forked child: a new lock (another thread may have held it); the shell drops its clients."""
        self._lock = threading.Lock()

    def get_client(self) -> httpx.Client:
        """The hook's one sync client (created on first use)."""
        return self._shell(self.get_conn()).client()

    async def aget_client(self) -> httpx.AsyncClient:
        """The hook's async client, bound to the running event loop."""
        return await self._shell(await self.aget_conn()).aclient()

    @property
    def _client(self) -> httpx.Client | None:
        """The sync client if one is open (tests check that a task closed its hook)."""
        return self._io.open_client if self._io is not None else None

    @property
    def _aclient(self) -> httpx.AsyncClient | None:
        """The hook's own async client if one is open."""
        return self._io.open_aclient if self._io is not None else None

    def close(self) -> None:
        """Close the sync client (the async one needs ``aclose``)."""
        if self._io is not None:
            self._io.close()

    async def aclose(self) -> None:
        """Close both clients (a shared async client stays open for the other hooks)."""
        if self._io is not None:
            await self._io.aclose()

    @staticmethod
    async def aclose_shared_clients() -> None:
        """Close the running event loop's shared async clients (see ``shared_async_client``)."""
        await SHARED_ASYNC_CLIENTS.aclose_for_running_loop()

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
        self._shell(self.get_conn())
        return self._require_tokens().get().value

    async def aget_token(self) -> str:
        """``get_token`` for coroutines."""
        self._shell(await self.aget_conn())
        return (await self._require_tokens().aget()).value

    def _require_tokens(self) -> TokenSource:
        assert self._tokens is not None, "_shell() creates the token source"
        return self._tokens

    # -- calls --------------------------------------------------------------------------------

    def request(self, method: str, endpoint: str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Call ``endpoint`` (e.g. ``/v1/reseller/orders``) with a bearer token; ``options``:
        ``params``, ``json``, ``data``, ``headers``.

        A successful answer's whole body is read into memory (an error body only up to
        64 KiB): for large downloads use ``stream``, as the dieline operator does. The call,
        retries and body included, ends by the connection's ``request_deadline``.

        :raises PacklyAPIError: Packly answered with a status that is not 2xx (after one
            token refresh if the answer was 401).
        :raises PacklyAuthError: no token could be obtained.
        :raises PacklyTransportError: Packly could not be reached.
        """
        response = self._shell(self.get_conn()).request(method, endpoint, auth=self._auth, **options)
        raise_for_packly_status(response)
        return response

    async def arequest(self, method: str, endpoint: str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """``request`` for coroutines."""
        response = await self._shell(await self.aget_conn()).arequest(method, endpoint, auth=self._auth, **options)
        raise_for_packly_status(response)
        return response

    @contextlib.contextmanager
    def stream(
        self, method: str, endpoint: str, *, params: Any = None, headers: Mapping[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """An authenticated call whose body is read in chunks (``response.iter_bytes()``)."""
        shell = self._shell(self.get_conn())
        response = shell.request(method, endpoint, auth=self._auth, stream=True, params=params, headers=headers)
        try:
            with checked_stream(response):
                yield response
        finally:
            response.close()

    @contextlib.asynccontextmanager
    async def astream(
        self, method: str, endpoint: str, *, params: Any = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """``stream`` for coroutines (``response.aiter_bytes()``)."""
        shell = self._shell(await self.aget_conn())
        response = await shell.arequest(method, endpoint, auth=self._auth, stream=True, params=params, headers=headers)
        try:
            with checked_stream(response):
                yield response
        finally:
            await response.aclose()

    # -- Packly's documented resources --------------------------------------------------------

    def call_endpoint(self, endpoint: Endpoint[_Args, _Result], *args: _Args.args, **kwargs: _Args.kwargs) -> _Result:
        """``GET endpoint.path``: its query checked and built by the spec (before any request),
        its answer read by the spec (``core.api.Endpoint``). Every resource method below is this."""
        return endpoint.read(reply_of(self.request("GET", endpoint.path, params=endpoint.query(*args, **kwargs))))

    async def acall_endpoint(
        self, endpoint: Endpoint[_Args, _Result], *args: _Args.args, **kwargs: _Args.kwargs
    ) -> _Result:
        """``call_endpoint`` for coroutines: the same spec, only the I/O differs."""
        query = endpoint.query(*args, **kwargs)
        return endpoint.read(reply_of(await self.arequest("GET", endpoint.path, params=query)))

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
        return self.call_endpoint(DIELINE, article, material, width, depth, height, type)

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
        return await self.acall_endpoint(DIELINE, article, material, width, depth, height, type)

    def get_quotation(
        self, items: Iterable[Mapping[str, Any]], shipping: str | None = None, *, encode: QueryEncoder = bracket_encode
    ) -> Any:
        """Prices for ``items`` (Packly's answer as JSON; its shape past ``request`` is undocumented).

        ``encode`` puts the items in the query string; Packly does not document how, and the
        default is the common bracket convention ``items[0][article]=...``.
        """
        return self.call_endpoint(QUOTATION, items, shipping, encode=encode)

    async def aget_quotation(
        self, items: Iterable[Mapping[str, Any]], shipping: str | None = None, *, encode: QueryEncoder = bracket_encode
    ) -> Any:
        """``get_quotation`` for coroutines."""
        return await self.acall_endpoint(QUOTATION, items, shipping, encode=encode)

    def iter_orders(self, *, sort: str = "desc", limit: int = 50) -> Generator[dict[str, Any], None, None]:
        """Every order, page by page (zero-based ``page``), fetched only as far as it is read."""
        pager = OrderPager(limit=limit, sort=sort)
        while not pager.done:
            yield from pager.take(self.call_endpoint(ORDERS, *pager.args()))

    async def aiter_orders(self, *, sort: str = "desc", limit: int = 50) -> AsyncGenerator[dict[str, Any], None]:
        """``iter_orders`` for coroutines."""
        pager = OrderPager(limit=limit, sort=sort)
        while not pager.done:
            for order in pager.take(await self.acall_endpoint(ORDERS, *pager.args())):
                yield order

    def get_order(self, order_id: str, *, sort: str = "desc", limit: int = 50) -> dict[str, Any]:
        """One order, found by paging (Packly documents no by-id endpoint)."""
        order = find_order(self.iter_orders(sort=sort, limit=limit), order_id)
        if order is None:
            raise order_not_found(order_id)
        return order

    async def aget_order(self, order_id: str, *, sort: str = "desc", limit: int = 50) -> dict[str, Any]:
        """``get_order`` for coroutines."""
        async for order in self.aiter_orders(sort=sort, limit=limit):
            if is_order(order, order_id):
                return dict(order)
        raise order_not_found(order_id)

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
