"""The clients compared, each doing the same work: ``GET /v1/reseller/orders`` with a bearer token.

A contender is built for a ``Target``: either in process (``httpx.MockTransport`` for the httpx
based clients, a canned ``requests`` adapter for ``HttpHook``) or a real loopback server in
another process. Each one is built once and reused for every call, as a task would.

The third-party clients are imported only here and only when built, so ``python -m
benchmarks --help`` works without the ``bench`` dependency group.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks._common import API_PATH, CLIENT_ID, CLIENT_SECRET, TOKEN_PATH

MOCK_BASE_URL = "http://127.0.0.1:9"  # never dialled: the mock transports answer
MOCK_TOKEN = "bench-token-static"
_API_BODY = (
    b'{"request": {"method": "GET", "path": "/v1/reseller/orders"}, "response": [{"id": "ORD-0001", "status": "paid"}]}'
)
_TOKEN_BODY = b'{"token_type": "bearer", "access_token": "bench-token-static", "expires_in": 3600}'
_JSON_HEADERS = [("content-type", "application/json")]

#: Airflow connection ids the benchmarks define through ``AIRFLOW_CONN_*`` variables.
HTTP_CONN_ID = "bench_http"
PACKLY_CONN_ID = "bench_packly"


def mock_handler(request: httpx.Request) -> httpx.Response:
    """The in-process Packly: a token for the token endpoint, a small JSON body for the API."""
    if request.url.path == TOKEN_PATH:
        return httpx.Response(200, content=_TOKEN_BODY, headers=_JSON_HEADERS)
    if not request.headers.get("authorization", "").startswith("Bearer "):
        return httpx.Response(401, content=b'{"error": {"code": "UNAUTHORIZED"}}', headers=_JSON_HEADERS)
    return httpx.Response(200, content=_API_BODY, headers=_JSON_HEADERS)


@dataclass(frozen=True)
class Target:
    """Where the contenders send their requests."""

    base_url: str
    in_process: bool

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def transport(self) -> httpx.BaseTransport | None:
        return httpx.MockTransport(mock_handler) if self.in_process else None

    def async_transport(self) -> httpx.AsyncBaseTransport | None:
        return httpx.MockTransport(mock_handler) if self.in_process else None

    def static_token(self) -> str:
        """What a user would paste into a header: one token, fetched once."""
        if self.in_process:
            return MOCK_TOKEN
        response = httpx.post(
            self.token_url,
            auth=(CLIENT_ID, CLIENT_SECRET),
            data={"grant_type": "client_credentials", "scope": "external"},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"unexpected HTTP {response.status_code}")


# -- sync ----------------------------------------------------------------------------------------


class SyncContender:
    name = ""
    label = ""
    #: Why this contender cannot run against an in-process target (``None``: it can).
    in_process_unavailable: str | None = None

    def call(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class RawHttpx(SyncContender):
    name = "raw-httpx"
    label = "raw httpx.Client, static Bearer header"

    def __init__(self, target: Target) -> None:
        token = target.static_token()
        self.client = httpx.Client(
            base_url=target.base_url,
            headers={"Authorization": f"Bearer {token}"},
            transport=target.transport(),
        )

    def call(self) -> None:
        _check(self.client.get(API_PATH))

    def close(self) -> None:
        self.client.close()


def _httpx_auth(target: Target) -> Any:
    """httpx-auth's client-credentials flow against ``target`` (its token fetch is always sync)."""
    import httpx_auth

    token_client = httpx.Client(transport=target.transport()) if target.in_process else None
    return httpx_auth.OAuth2ClientCredentials(
        target.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, scope="external", client=token_client
    )


class HttpxAuth(SyncContender):
    name = "httpx-auth"
    label = "httpx-auth OAuth2ClientCredentials"

    def __init__(self, target: Target) -> None:
        self.auth = _httpx_auth(target)
        self.client = httpx.Client(base_url=target.base_url, auth=self.auth, transport=target.transport())

    def call(self) -> None:
        _check(self.client.get(API_PATH))

    def close(self) -> None:
        self.client.close()


def _authlib_kwargs(target: Target) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "external",
        "token_endpoint": target.token_url,
        "grant_type": "client_credentials",
        "base_url": target.base_url,
    }


def authlib_module() -> Any:
    import authlib.deprecate  # installs an "always" filter of its own: put ours in front of it

    with warnings.catch_warnings():  # Authlib asks for httpx2 when it finds httpx
        warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
        from authlib.integrations import httpx_client

    return httpx_client


def _authlib_transport(target: Target) -> Any:
    """``target``'s in-process transport, built with the HTTP library Authlib runs on.

    Authlib uses httpx2 when it is installed (openlineage-python, of the ``openlineage`` extra,
    brings it) and refuses an httpx transport then: the mock Packly is wrapped for httpx2.
    """
    from authlib.integrations.httpx_client._compat import httpx2 as http

    if http is httpx or not target.in_process:
        return target.transport()

    def handler(request: Any) -> Any:
        headers = request.headers.multi_items()
        answer = mock_handler(httpx.Request(request.method, str(request.url), headers=headers, content=request.content))
        return http.Response(answer.status_code, headers=answer.headers.multi_items(), content=answer.content)

    return http.MockTransport(handler)


class Authlib(SyncContender):
    name = "authlib"
    label = "Authlib OAuth2Client"

    def __init__(self, target: Target) -> None:
        self.client = authlib_module().OAuth2Client(transport=_authlib_transport(target), **_authlib_kwargs(target))
        self.client.fetch_token()

    def call(self) -> None:
        _check(self.client.get(API_PATH))

    def close(self) -> None:
        self.client.close()


class _CannedAdapter:
    """A ``requests`` adapter answering in process, like ``httpx.MockTransport``."""

    def __new__(cls) -> Any:
        import requests
        from requests.adapters import BaseAdapter
        from requests.structures import CaseInsensitiveDict

        class CannedAdapter(BaseAdapter):
            def send(self, request: Any, **kwargs: Any) -> Any:
                response = requests.Response()
                authorized = str(request.headers.get("Authorization", "")).startswith("Bearer ")
                response.status_code = 200 if authorized else 401
                response.reason = "OK" if authorized else "Unauthorized"
                response._content = _API_BODY
                response.headers = CaseInsensitiveDict({"content-type": "application/json"})
                response.encoding = "utf-8"
                response.url = request.url
                response.request = request
                return response

            def close(self) -> None:
                pass

        return CannedAdapter()


class AirflowHttpHook(SyncContender):
    name = "airflow-httphook"
    label = "Airflow HttpHook (requests), Bearer header, one hook reused"

    def __init__(self, target: Target) -> None:
        from airflow.providers.http.hooks.http import HttpHook

        self.headers = {"Authorization": f"Bearer {target.static_token()}"}
        adapter = _CannedAdapter() if target.in_process else None
        self.hook = HttpHook(method="GET", http_conn_id=HTTP_CONN_ID, adapter=adapter)

    def call(self) -> None:
        response = self.hook.run(API_PATH, headers=self.headers)
        if response.status_code != 200:
            raise RuntimeError(f"unexpected HTTP {response.status_code}")


class Packly(SyncContender):
    name = "packly-hook"
    label = "PacklyHook.request (tokens managed)"

    def __init__(self, target: Target) -> None:
        from airflow_provider_packly.hooks.packly import PacklyHook

        self.hook = packly_hook(PacklyHook, target)
        self.hook.get_token()

    def call(self) -> None:
        _check(self.hook.request("GET", API_PATH))

    def close(self) -> None:
        self.hook.close()


def packly_hook(cls: Any, target: Target, **options: Any) -> Any:
    """A PacklyHook for ``target``: settings in hand with the mock, a connection id otherwise."""
    if target.in_process:
        from airflow_provider_packly.connection import PacklyConnection

        connection = PacklyConnection(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=target.base_url)
        return cls(
            connection=connection,
            transport=target.transport(),
            async_transport=target.async_transport(),
            **options,
        )
    return cls(PACKLY_CONN_ID, **options)


class RawUrllib3(SyncContender):
    """The floor of the sync path (issue 12, goal 3): urllib3, which Airflow installs (requests
    runs on it), with one keep-alive connection pool, a static bearer header and the body read."""

    name = "raw-urllib3"
    label = "raw urllib3 HTTPConnectionPool, static Bearer header, body read"
    in_process_unavailable = "urllib3 has no in-process transport"

    def __init__(self, target: Target) -> None:
        import urllib3

        url = urllib3.util.parse_url(target.base_url)
        self.pool = urllib3.HTTPConnectionPool(
            url.host or "127.0.0.1",
            url.port,
            maxsize=1,
            headers={"Authorization": f"Bearer {target.static_token()}"},
        )

    def call(self) -> None:
        response = self.pool.request("GET", API_PATH)  # preload_content: the body is read
        if response.status != 200:
            raise RuntimeError(f"unexpected HTTP {response.status}")

    def close(self) -> None:
        self.pool.close()


SYNC_CONTENDERS: list[type[SyncContender]] = [RawHttpx, HttpxAuth, Authlib, AirflowHttpHook, Packly, RawUrllib3]


# -- async ---------------------------------------------------------------------------------------


class AsyncContender:
    name = ""
    label = ""
    #: Why this contender cannot run against an in-process target (``None``: it can).
    in_process_unavailable: str | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this contender cannot run at all here (e.g. a module this version lacks), or ``None``."""
        return None

    async def open(self) -> None:
        pass

    async def call(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class RawAsyncHttpx(AsyncContender):
    name = "raw-httpx-async"
    label = "raw httpx.AsyncClient, static Bearer header"

    def __init__(self, target: Target) -> None:
        self.target = target

    def _transport(self) -> httpx.AsyncBaseTransport | None:
        return self.target.async_transport()

    async def open(self) -> None:
        token = await asyncio.to_thread(self.target.static_token)
        self.client = httpx.AsyncClient(
            base_url=self.target.base_url,
            headers={"Authorization": f"Bearer {token}"},
            transport=self._transport(),
        )

    async def call(self) -> None:
        _check(await self.client.get(API_PATH))

    async def close(self) -> None:
        await self.client.aclose()


class RawAsyncHttpxAiohttp(RawAsyncHttpx):
    name = "raw-httpx-aiohttp"
    label = "raw httpx.AsyncClient over httpx-aiohttp's AiohttpTransport, static header"
    in_process_unavailable = "aiohttp has no in-process transport"

    def _transport(self) -> httpx.AsyncBaseTransport | None:
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport()


class AsyncHttpxAuth(AsyncContender):
    name = "httpx-auth-async"
    label = "httpx-auth OAuth2ClientCredentials on httpx.AsyncClient"

    def __init__(self, target: Target) -> None:
        self.auth = _httpx_auth(target)
        self.target = target

    async def open(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.target.base_url, auth=self.auth, transport=self.target.async_transport()
        )

    async def call(self) -> None:
        _check(await self.client.get(API_PATH))

    async def close(self) -> None:
        await self.client.aclose()


class AsyncAuthlib(AsyncContender):
    name = "authlib-async"
    label = "Authlib AsyncOAuth2Client"

    def __init__(self, target: Target) -> None:
        self.target = target

    async def open(self) -> None:
        self.client = authlib_module().AsyncOAuth2Client(
            transport=_authlib_transport(self.target), **_authlib_kwargs(self.target)
        )
        await self.client.fetch_token()

    async def call(self) -> None:
        _check(await self.client.get(API_PATH))

    async def close(self) -> None:
        await self.client.aclose()


class _HttpAsyncHookBase(AsyncContender):
    in_process_unavailable = "aiohttp has no in-process transport"

    def __init__(self, target: Target) -> None:
        from airflow.providers.http.hooks.http import HttpAsyncHook

        self.target = target
        self.hook = HttpAsyncHook(method="GET", http_conn_id=HTTP_CONN_ID, retry_limit=1)

    async def open(self) -> None:
        self.headers = {"Authorization": f"Bearer {await asyncio.to_thread(self.target.static_token)}"}


class AirflowHttpAsyncHookSession(_HttpAsyncHookBase):
    name = "airflow-httpasynchook-session"
    label = "Airflow HttpAsyncHook inside `async with hook.session()` (aiohttp)"

    async def open(self) -> None:
        await super().open()
        self._session_cm = self.hook.session()
        self.session = await self._session_cm.__aenter__()

    async def call(self) -> None:
        response = await self.session.run(API_PATH, headers=self.headers)
        await response.read()
        response.release()

    async def close(self) -> None:
        await self._session_cm.__aexit__(None, None, None)


class AirflowHttpAsyncHookRun(_HttpAsyncHookBase):
    name = "airflow-httpasynchook-run"
    label = "Airflow HttpAsyncHook.run (a new aiohttp session per call)"

    async def call(self) -> None:
        response = await self.hook.run(endpoint=API_PATH, headers=self.headers)
        await response.read()  # the session is already closed: this can fail (counted)


class AsyncPackly(AsyncContender):
    name = "packly-hook-async"
    label = "PacklyHook.arequest (tokens managed)"

    def __init__(self, target: Target) -> None:
        self.target = target

    async def open(self) -> None:
        from airflow_provider_packly.hooks.packly import PacklyHook

        self.hook = packly_hook(PacklyHook, self.target)
        await self.hook.aget_token()

    async def call(self) -> None:
        _check(await self.hook.arequest("GET", API_PATH))

    async def close(self) -> None:
        await self.hook.aclose()


class AsyncPacklyAiohttp(AsyncPackly):
    name = "packly-hook-aiohttp"
    label = "PacklyHook.arequest with async_transport=httpx-aiohttp's AiohttpTransport"
    in_process_unavailable = "aiohttp has no in-process transport"

    async def open(self) -> None:
        from httpx_aiohttp import AiohttpTransport

        from airflow_provider_packly.hooks.packly import PacklyHook

        self.hook = PacklyHook(PACKLY_CONN_ID, async_transport=AiohttpTransport())
        await self.hook.aget_token()


class AsyncPacklyHttpxTransport(AsyncPackly):
    """PacklyHook on httpx's own default transport, given explicitly: the async path before
    issue 12 (its default then), kept as the "before" row of the goals."""

    name = "packly-hook-httpx"
    label = "PacklyHook.arequest with async_transport=httpx.AsyncHTTPTransport() (before issue 12)"
    in_process_unavailable = "needs a real socket"

    async def open(self) -> None:
        from airflow_provider_packly.hooks.packly import PacklyHook

        self.hook = PacklyHook(PACKLY_CONN_ID, async_transport=httpx.AsyncHTTPTransport())
        await self.hook.aget_token()


def pyreqwest_unavailable() -> str | None:
    """Why pyreqwest's contenders cannot run here (the bench group has it on Python 3.11+ only)."""
    return None if importlib.util.find_spec("pyreqwest") is not None else "pyreqwest is not installed"


class AsyncPacklyPyreqwest(AsyncPackly):
    """PacklyHook over pyreqwest's own httpx transport: a Rust HTTP engine under the same httpx
    edges. Against ``packly-hook-async`` it tells whether an engine faster than aiohttp would
    close goal 1 (not a transport the provider offers: its errors are not held to the contract)."""

    name = "packly-hook-pyreqwest"
    label = "PacklyHook.arequest with async_transport=pyreqwest's HttpxTransport (a Rust engine)"
    in_process_unavailable = "needs a real socket"

    @classmethod
    def unavailable(cls) -> str | None:
        return pyreqwest_unavailable()

    async def open(self) -> None:
        from pyreqwest.compatibility.httpx import HttpxTransport

        from airflow_provider_packly.hooks.packly import PacklyHook

        self.hook = PacklyHook(PACKLY_CONN_ID, async_transport=HttpxTransport())
        await self.hook.aget_token()


#: The provider's own aiohttp-backed transport (issue 12); absent from older versions.
PROVIDER_AIOHTTP_TRANSPORT = "airflow_provider_packly._http.aiohttp_transport"


class AsyncPacklyProviderAiohttp(AsyncPackly):
    """PacklyHook given the provider's own ``AiohttpTransport`` explicitly (one per hook)."""

    name = "packly-hook-own-aiohttp"
    label = "PacklyHook.arequest with async_transport=the provider's AiohttpTransport()"
    in_process_unavailable = "aiohttp has no in-process transport"

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            found = importlib.util.find_spec(PROVIDER_AIOHTTP_TRANSPORT) is not None
        except ImportError:
            found = False
        if not found:
            return f"this version of the provider has no `{PROVIDER_AIOHTTP_TRANSPORT}`"
        if importlib.util.find_spec("aiohttp") is None:
            return "aiohttp is not installed"
        return None

    async def open(self) -> None:
        from airflow_provider_packly.hooks.packly import PacklyHook

        module = importlib.import_module(PROVIDER_AIOHTTP_TRANSPORT)
        self.hook = PacklyHook(PACKLY_CONN_ID, async_transport=module.AiohttpTransport())
        await self.hook.aget_token()


class RawProviderTransport(AsyncContender):
    """The provider's ``AiohttpTransport`` alone: an ``httpx.Request`` in, the ``httpx.Response``
    read, no hook (no deadline, retries, token cache, bounded bodies or metrics). The hook's time
    over this row is what its per-call guarantees cost; this row over raw aiohttp is the
    transport's own (httpx objects at the edges, its timeouts)."""

    name = "raw-provider-transport"
    label = "the provider's AiohttpTransport alone (no hook), static Bearer header"
    in_process_unavailable = "aiohttp has no in-process transport"

    def __init__(self, target: Target) -> None:
        self.target = target

    @classmethod
    def unavailable(cls) -> str | None:
        return AsyncPacklyProviderAiohttp.unavailable()

    async def open(self) -> None:
        module = importlib.import_module(PROVIDER_AIOHTTP_TRANSPORT)
        token = await asyncio.to_thread(self.target.static_token)
        self.transport = module.AiohttpTransport()
        self.url = httpx.URL(self.target.base_url + API_PATH)
        self.headers = httpx.Headers({"Authorization": f"Bearer {token}"})

    async def call(self) -> None:
        response = await self.transport.handle_async_request(httpx.Request("GET", self.url, headers=self.headers))
        try:
            await response.aread()
        finally:
            await response.aclose()
        _check(response)

    async def close(self) -> None:
        await self.transport.aclose()


ASYNC_CONTENDERS: list[type[AsyncContender]] = [
    RawAsyncHttpx,
    AsyncHttpxAuth,
    AsyncAuthlib,
    AirflowHttpAsyncHookSession,
    AirflowHttpAsyncHookRun,
    AsyncPackly,
    RawAsyncHttpxAiohttp,
    AsyncPacklyAiohttp,
]


async def run_concurrently(call: Callable[[], Awaitable[None]], calls: int, concurrency: int) -> int:
    """``calls`` calls by ``concurrency`` workers, each calling in turn; returns the failures."""
    failures = 0
    shares = [calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)]

    async def worker(count: int) -> None:
        nonlocal failures
        for _ in range(count):
            try:
                await call()
            except Exception:  # noqa: BLE001 - each client raises its own kinds; any of them is a failed call
                failures += 1

    await asyncio.gather(*(worker(count) for count in shares if count))
    return failures
