"""The clients: their options, the shared per-event-loop async clients, and fork safety.

Sync and async clients get the same options (``client_options``), among them the one shared
TLS context of the connection's settings (``tls.SSL_CONTEXTS``) and the response hook that
checks a compressed body's end (``compressed``).
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import importlib.metadata
import os
import platform
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import httpx

from airflow_provider_packly import __version__
from airflow_provider_packly._http.aiohttp_transport import AiohttpTransport
from airflow_provider_packly._http.proxies import env_proxy_for
from airflow_provider_packly.compressed import acheck_compressed_end, check_compressed_end
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.tls import SSL_CONTEXTS

__all__ = [
    "SHARED_ASYNC_CLIENTS",
    "AsyncPacklyClient",
    "PacklyClient",
    "SharedAsyncClients",
    "client_options",
    "close_at_loop_shutdown",
    "close_elsewhere",
    "forget_after_fork",
    "new_async_client",
    "new_client",
    "proxy_for",
    "running_loop",
    "user_agent",
]


@functools.cache
def user_agent() -> str:
    """``airflow-provider-packly/<version> (Airflow/<version>; Python/<version>)``, computed once.

    Sent with every request, token requests included, so that Packly can tell this provider
    and its versions apart from other clients (as the Databricks provider does). Read from the
    installed packages' metadata, without importing Airflow; ``unknown`` outside Airflow.
    """
    airflow = "unknown"
    for distribution in ("apache-airflow-core", "apache-airflow"):
        try:
            airflow = importlib.metadata.version(distribution)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"airflow-provider-packly/{__version__} (Airflow/{airflow}; Python/{platform.python_version()})"


def client_options(connection: PacklyConnection, *, sync: bool) -> dict[str, Any]:
    """Options of every client, sync and async (TLS and proxy live in the transport)."""
    return {
        # A gzip/deflate body cut short but re-framed is an error, not a shorter success.
        "event_hooks": {"response": [check_compressed_end if sync else acheck_compressed_end]},
        "base_url": connection.base_url,
        "timeout": httpx.Timeout(**connection.phase_timeouts()),
        "headers": {"Accept": "application/json", "User-Agent": user_agent()},
        # A redirect could carry the bearer token to another host; Packly documents none.
        "follow_redirects": False,
        # Nor does it document cookies: none is kept, so none is ever sent back.
        "cookies": http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        # The environment's proxy settings are read once, by ``proxy_for``.
        "trust_env": False,
    }


def proxy_for(connection: PacklyConnection) -> str | None:
    """The proxy all of ``connection``'s calls go through, decided once, for sync and async alike.

    The connection's own proxy replaces the environment's. Without one, ``HTTPS_PROXY`` (or
    ``HTTP_PROXY`` for an ``http`` base URL, or ``ALL_PROXY``) applies unless ``NO_PROXY``
    names the base URL's host, as for httpx and aiohttp (both read them with ``urllib``'s rules).
    """
    if connection.proxy_url is not None:
        return connection.proxy_url
    return env_proxy_for(connection.base_url)


class PacklyClient(httpx.Client):
    """An ``httpx.Client`` that names its one transport, which the shell sends through directly.

    httpx's client code costs more per call than the provider uses of it (cookies, redirects,
    URL merging, mounts: ``docs/transports.md``), so the shell's sends skip it
    (``_http.shell``); the client is kept for its lifecycle and for ``get_client`` users.
    """

    def __init__(self, *, transport: httpx.BaseTransport, **options: Any) -> None:
        super().__init__(transport=transport, **options)
        self.transport = transport


class AsyncPacklyClient(httpx.AsyncClient):
    """``PacklyClient`` for coroutines."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **options: Any) -> None:
        super().__init__(transport=transport, **options)
        self.transport = transport


def new_client(
    connection: PacklyConnection, transport: httpx.BaseTransport | None, context: ssl.SSLContext
) -> PacklyClient:
    """The sync client of ``connection``: over ``transport`` if given (it then decides about
    proxies and TLS), else over httpx's own with ``proxy_for(connection)`` and the shared TLS
    ``context``."""
    if transport is None:
        transport = httpx.HTTPTransport(verify=context, proxy=proxy_for(connection))
    return PacklyClient(transport=transport, **client_options(connection, sync=True))


def new_async_client(
    connection: PacklyConnection, transport: httpx.AsyncBaseTransport | None, context: ssl.SSLContext
) -> AsyncPacklyClient:
    """``new_client`` for coroutines; the default transport is the provider's over aiohttp."""
    if transport is None:
        transport = AiohttpTransport(ssl_context=context, proxy=proxy_for(connection), trust_env=False)
    return AsyncPacklyClient(transport=transport, **client_options(connection, sync=False))


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def close_elsewhere(
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


async def close_at_loop_shutdown(clients: dict[Any, AsyncPacklyClient]) -> AsyncGenerator[None, None]:
    """Started (one ``__anext__``) on a loop, it closes ``clients`` when that loop shuts down its
    async generators (``asyncio.run`` and the triggerer do), or when it is ``aclose``d."""
    try:
        yield
    finally:
        for client in list(clients.values()):
            await client.aclose()
        clients.clear()


class SharedAsyncClients:
    """One ``AsyncClient`` per (event loop, connection settings, transport) for opted-in hooks.

    A client's pool belongs to the loop that opened it, hence one set per loop. Each set is
    closed by an async generator registered with its loop: ``loop.shutdown_asyncgens()`` (run
    by ``asyncio.run`` and at triggerer shutdown) finalises it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[dict[Any, AsyncPacklyClient], AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        forget_after_fork(self)

    async def get(
        self, connection: PacklyConnection, transport: httpx.AsyncBaseTransport | None, context: ssl.SSLContext
    ) -> AsyncPacklyClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
        if entry is None:
            clients: dict[Any, AsyncPacklyClient] = {}
            closer = close_at_loop_shutdown(clients)
            await closer.__anext__()  # registers it with the loop's async-generator hooks
            with self._lock:
                entry = self._by_loop.setdefault(loop, (clients, closer))
        clients = entry[0]
        key = (connection, transport)
        client = clients.get(key)
        if client is None or client.is_closed:
            client = clients[key] = new_async_client(connection, transport, context)
        return client

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's shared clients without closing them (see
        ``PacklyHttp._forget_after_fork``)."""
        self._lock = threading.Lock()
        self._by_loop = weakref.WeakKeyDictionary()

    async def aclose_for_running_loop(self) -> None:
        with self._lock:
            entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()


class _ForkAware(Protocol):
    def _forget_after_fork(self) -> None: ...


#: Everything alive in this process that holds clients or locks (weakly: nothing is kept
#: alive by this), so that a forked child can drop what it inherited.
_FORK_AWARE: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def forget_after_fork(holder: _ForkAware) -> None:
    """Have ``holder._forget_after_fork()`` called in every child this process forks."""
    _FORK_AWARE.add(holder)


def _after_fork_in_child() -> None:
    """``os.fork()`` copies the clients' pools (their sockets are the parent's connections) and
    any lock another thread held, but not the threads: start the child with none of them."""
    SSL_CONTEXTS.forget_after_fork()
    for holder in list(_FORK_AWARE):
        holder._forget_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)

#: The process's shared async clients (``PacklyHook(shared_async_client=True)``).
SHARED_ASYNC_CLIENTS = SharedAsyncClients()
