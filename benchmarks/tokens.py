"""Token economy on a cold cache, and the event loop's stall while a token is fetched.

Token requests are counted at the server (``/_bench/stats``), never in the client. Before each
case every cache is emptied: ``airflow_provider_packly.auth.TOKEN_CACHE``, httpx-auth's
process-wide ``OAuth2.token_cache``, and Authlib keeps its token in the client, which is new
for each case.

How each client is used (what its documentation suggests, one object per waiter where the
library shares tokens between objects, one shared client where it does not):

* PacklyHook: one hook per coroutine or thread (``shared_async_client=True`` for the
  coroutines, as the triggers do); the cache is process-wide.
* httpx-auth: one ``OAuth2ClientCredentials`` per waiter; its cache is process-wide.
* Authlib: one client shared by every waiter (its token lives in the client), in two ways: a
  client given an already expired token refreshes it by itself under its refresh lock
  ("auto-refresh"); a client without a token needs ``fetch_token()`` first, which each waiter
  calls when it finds no token yet ("fetch_token").
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks._common import API_PATH, CLIENT_ID, CLIENT_SECRET, Server, Spread
from benchmarks.contenders import PACKLY_CONN_ID, Target, authlib_module

WRONG_SECRET = "not-the-secret"
#: The connection id with the wrong client secret.
PACKLY_WRONG_CONN_ID = "bench_packly_wrong"
#: Token endpoint delay for the counting cases: long enough for every waiter to join one fetch.
ECONOMY_TOKEN_DELAY = 0.05
#: Token endpoint delay for the stall case: a slow token endpoint.
SLOW_TOKEN_DELAY = 0.3
HEARTBEAT_SECONDS = 0.005

_EXPIRED = {"access_token": "expired", "token_type": "bearer", "expires_at": 1}


@dataclass
class TokenCounts:
    coroutines: int | None = None
    threads: int | None = None
    wrong_credentials: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class StallResult:
    worst_gap_ms: Spread
    rounds: int
    note: str = ""


def _clear_caches() -> None:
    from airflow_provider_packly.auth import TOKEN_CACHE

    TOKEN_CACHE.clear()
    try:
        import httpx_auth

        httpx_auth.OAuth2.token_cache.clear()
    except ImportError:
        pass


def _counted(server: Server, work: Callable[[], Any]) -> tuple[int, Any]:
    _clear_caches()
    server.reset(token_delay=ECONOMY_TOKEN_DELAY)
    outcome = work()
    return server.token_requests(), outcome


def _gather(n: int, one: Callable[[int], Awaitable[Any]]) -> Callable[[], list[Any]]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

    return lambda: asyncio.run(main())


def _threads(n: int, one: Callable[[int], Any]) -> Callable[[], list[Any]]:
    def run() -> list[Any]:
        barrier = threading.Barrier(n)
        outcomes: list[Any] = [None] * n

        def body(i: int) -> None:
            barrier.wait()
            try:
                outcomes[i] = one(i)
            except Exception as exc:  # noqa: BLE001 - the thread's outcome, whatever it is, is what run() returns
                outcomes[i] = exc

        workers = [threading.Thread(target=body, args=(i,)) for i in range(n)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return outcomes

    return run


def _errors(outcomes: list[Any]) -> int:
    return sum(isinstance(o, BaseException) for o in outcomes)


def _check_errors(name: str, case: str, outcomes: list[Any], expected: int, counts: TokenCounts) -> None:
    errors = _errors(outcomes)
    if errors != expected:
        first = next((o for o in outcomes if isinstance(o, BaseException)), None)
        counts.notes.append(
            f"{name} {case}: {errors} of {len(outcomes)} waiters failed (expected {expected}): {first!r}"
        )


def packly_counts(server: Server, *, coroutines: int, threads: int, waiters: int) -> TokenCounts:
    from airflow_provider_packly.hooks.packly import PacklyHook

    counts = TokenCounts()

    async def one_async(conn_id: str) -> Any:
        async with PacklyHook(conn_id, shared_async_client=True) as hook:
            return (await hook.arequest("GET", API_PATH)).status_code

    def in_loop(n: int, conn_id: str) -> Callable[[], list[Any]]:
        async def main() -> list[Any]:
            try:
                return await asyncio.gather(*(one_async(conn_id) for _ in range(n)), return_exceptions=True)
            finally:
                await PacklyHook.aclose_shared_clients()

        return lambda: asyncio.run(main())

    def one_sync(_: int) -> Any:
        with PacklyHook(PACKLY_CONN_ID) as hook:
            return hook.request("GET", API_PATH).status_code

    counts.coroutines, outcomes = _counted(server, in_loop(coroutines, PACKLY_CONN_ID))
    _check_errors("PacklyHook", "coroutines", outcomes, 0, counts)
    counts.threads, outcomes = _counted(server, _threads(threads, one_sync))
    _check_errors("PacklyHook", "threads", outcomes, 0, counts)
    counts.wrong_credentials, outcomes = _counted(server, in_loop(waiters, PACKLY_WRONG_CONN_ID))
    _check_errors("PacklyHook", "wrong credentials", outcomes, waiters, counts)
    return counts


def httpx_auth_counts(server: Server, *, coroutines: int, threads: int, waiters: int) -> TokenCounts:
    import httpx_auth

    counts = TokenCounts()
    target = Target(server.base_url, in_process=False)

    def auth(secret: str = CLIENT_SECRET) -> Any:
        return httpx_auth.OAuth2ClientCredentials(
            target.token_url, client_id=CLIENT_ID, client_secret=secret, scope="external"
        )

    def in_loop(n: int, secret: str) -> Callable[[], list[Any]]:
        async def main() -> list[Any]:
            async with httpx.AsyncClient(base_url=target.base_url) as client:

                async def one() -> int:
                    response = await client.get(API_PATH, auth=auth(secret))
                    response.raise_for_status()
                    return response.status_code

                return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)

        return lambda: asyncio.run(main())

    def one_sync(_: int) -> int:
        with httpx.Client(base_url=target.base_url, auth=auth()) as client:
            response = client.get(API_PATH)
            response.raise_for_status()
            return response.status_code

    counts.coroutines, outcomes = _counted(server, in_loop(coroutines, CLIENT_SECRET))
    _check_errors("httpx-auth", "coroutines", outcomes, 0, counts)
    counts.threads, outcomes = _counted(server, _threads(threads, one_sync))
    _check_errors("httpx-auth", "threads", outcomes, 0, counts)
    counts.wrong_credentials, outcomes = _counted(server, in_loop(waiters, WRONG_SECRET))
    _check_errors("httpx-auth", "wrong credentials", outcomes, waiters, counts)
    return counts


def authlib_counts(server: Server, *, coroutines: int, threads: int, waiters: int, mode: str) -> TokenCounts:
    """``mode``: ``auto-refresh`` (an expired token in the client) or ``fetch_token``."""
    clients = authlib_module()
    counts = TokenCounts()
    target = Target(server.base_url, in_process=False)

    def options(secret: str) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "scope": "external",
            "token_endpoint": target.token_url,
            "grant_type": "client_credentials",
            "base_url": target.base_url,
        }
        if mode == "auto-refresh":
            settings["token"] = dict(_EXPIRED)
        return settings

    def in_loop(n: int, secret: str) -> Callable[[], list[Any]]:
        async def main() -> list[Any]:
            async with clients.AsyncOAuth2Client(**options(secret)) as client:

                async def one() -> int:
                    if not client.token:
                        await client.fetch_token()
                    response = await client.get(API_PATH)
                    response.raise_for_status()
                    return response.status_code

                return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)

        return lambda: asyncio.run(main())

    def in_threads(n: int) -> Callable[[], list[Any]]:
        def run() -> list[Any]:
            with clients.OAuth2Client(**options(CLIENT_SECRET)) as client:

                def one(_: int) -> int:
                    if not client.token:
                        client.fetch_token()
                    response = client.get(API_PATH)
                    response.raise_for_status()
                    return response.status_code

                return _threads(n, one)()

        return run

    name = f"Authlib ({mode})"
    counts.coroutines, outcomes = _counted(server, in_loop(coroutines, CLIENT_SECRET))
    _check_errors(name, "coroutines", outcomes, 0, counts)
    counts.threads, outcomes = _counted(server, in_threads(threads))
    _check_errors(name, "threads", outcomes, 0, counts)
    counts.wrong_credentials, outcomes = _counted(server, in_loop(waiters, WRONG_SECRET))
    _check_errors(name, "wrong credentials", outcomes, waiters, counts)
    return counts


# -- the event loop while a token is fetched -----------------------------------------------------


async def _worst_gap(fetch: Callable[[], Awaitable[Any]]) -> float:
    """Run a 5 ms heartbeat around ``fetch()``; the longest interval between two beats, in ms."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(HEARTBEAT_SECONDS)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    try:
        await fetch()
    finally:
        await asyncio.sleep(0.05)
        stop.set()
        await beating
    return max(gaps) * 1000


def loop_stall(server: Server, *, rounds: int) -> dict[str, StallResult]:
    """Worst heartbeat gap while each async client fetches a token from a 300 ms token endpoint."""
    from airflow_provider_packly.hooks.packly import PacklyHook

    target = Target(server.base_url, in_process=False)
    server.reset(token_delay=SLOW_TOKEN_DELAY)

    async def packly_warm() -> float:
        async with PacklyHook(PACKLY_CONN_ID) as hook:
            await hook.aget_client()  # the client exists: only the token fetch is measured
            return await _worst_gap(hook.aget_token)

    async def packly_cold() -> float:
        hook = PacklyHook(PACKLY_CONN_ID)
        try:
            return await _worst_gap(lambda: hook.arequest("GET", API_PATH))
        finally:
            await hook.aclose()

    async def httpx_auth_fetch() -> float:
        import httpx_auth

        auth = httpx_auth.OAuth2ClientCredentials(
            target.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, scope="external"
        )
        async with httpx.AsyncClient(base_url=target.base_url, auth=auth) as client:
            return await _worst_gap(lambda: client.get(API_PATH))

    async def authlib_fetch() -> float:
        clients = authlib_module()
        async with clients.AsyncOAuth2Client(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            scope="external",
            token_endpoint=target.token_url,
            grant_type="client_credentials",
            base_url=target.base_url,
            token=dict(_EXPIRED),
        ) as client:
            return await _worst_gap(lambda: client.get(API_PATH))

    cases: dict[str, tuple[Callable[[], Awaitable[float]], str]] = {
        "packly-hook-async": (packly_warm, "aget_token() on a hook whose AsyncClient exists"),
        "packly-hook-async-first-call": (
            packly_cold,
            "first arequest() of a new hook: also creates its AsyncClient",
        ),
        "httpx-auth-async": (
            httpx_auth_fetch,
            "first GET; httpx-auth fetches with a sync httpx.Client",
        ),
        "authlib-async": (authlib_fetch, "first GET; auto-refresh of an expired token"),
    }
    worst: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (case, _note) in cases.items():
            _clear_caches()
            worst[name].append(asyncio.run(case()))
    server.reset(token_delay=0.0)
    return {name: StallResult(Spread.of(values), rounds, cases[name][1]) for name, values in worst.items()}


def async_client_creation_ms(rounds: int) -> Spread:
    """How long ``httpx.AsyncClient()`` takes to build (its SSL context), in ms."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        client = httpx.AsyncClient()
        times.append((time.perf_counter() - start) * 1000)
        del client
    return Spread.of(times)


_MASKER_PROBE = """
import asyncio, json, sys, time
from airflow.sdk import log as sdk_log

sizes = json.loads(sys.argv[1])
LINE = "Packly order ORD-0001 has status 'waiting_execute_payment'; waiting."

async def main():
    amask = getattr(sdk_log, "amask_secret", None)
    async def add(value):
        if amask is not None:
            await amask(value)
        else:
            sdk_log.mask_secret(value)
    out, n = {}, 0
    for target in sizes:
        while n < target - 1:
            await add(f"bench-token-{n:06d}-filler")
            n += 1
        start = time.perf_counter()
        await add(f"bench-token-{n:06d}-measured")
        added = time.perf_counter() - start
        n += 1
        masker = sdk_log._secrets_masker()
        start = time.perf_counter()
        for _ in range(200):
            masker.redact(LINE)
        out[str(target)] = {"add_ms": added * 1000, "redact_us": (time.perf_counter() - start) / 200 * 1e6}
    print(json.dumps(out))

asyncio.run(main())
"""


def masker_growth(sizes: list[int]) -> dict[str, dict[str, float]] | None:
    """What registering one more token with Airflow's secrets masker costs as tokens accumulate.

    PacklyHook registers every token it fetches (``amask_secret``); the masker keeps every
    secret it was given. Measured in a fresh interpreter, so this process's masker is untouched.
    """
    finished = subprocess.run(
        [sys.executable, "-c", _MASKER_PROBE, json.dumps(sizes)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if finished.returncode != 0:
        return None
    return json.loads(finished.stdout.strip().splitlines()[-1])
