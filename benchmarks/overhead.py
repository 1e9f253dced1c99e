"""Per-call cost of each client: in process (no sockets) and over real loopback HTTP.

Every comparison builds its contenders once, warms them up (tokens fetched, pools open), then
runs ``rounds`` rounds; in each round every contender does the same ``calls`` GETs, in
``slices`` slices taken in turn (contender A's first slice, B's first slice, ..., A's second
slice, ...), in an order rotated from slice to slice, so that a slow phase of the shared machine
falls on every contender alike. A contender's time in a round is the sum of its slices; its
ratio in a round is that time over raw httpx's time in the same round.

Over loopback, a census before the timed rounds counts the TCP connections each contender opens
for ``calls`` GETs (distinct client ports seen by the server); it also warms the pools.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_packly._http.retrying import call
from benchmarks._common import Comparison, Server, Spread, atimed, collect_garbage, rotated, timed
from benchmarks.contenders import (
    ASYNC_CONTENDERS,
    SYNC_CONTENDERS,
    AsyncContender,
    SyncContender,
    Target,
    run_concurrently,
)

WARMUP_CALLS = 20


def _slice_sizes(calls: int, slices: int) -> list[int]:
    slices = max(1, min(slices, calls))
    return [calls // slices + (1 if i < calls % slices else 0) for i in range(slices)]


def compare_sync(
    key: str,
    title: str,
    target: Target,
    *,
    calls: int,
    rounds: int,
    slices: int = 10,
    server: Server | None = None,
) -> Comparison:
    """``calls`` sequential GETs per contender and round."""
    contenders: list[SyncContender] = []
    not_applicable: dict[str, str] = {}
    for cls in SYNC_CONTENDERS:
        if target.in_process and cls.in_process_unavailable:
            not_applicable[cls.name] = cls.in_process_unavailable
            continue
        contenders.append(cls(target))
    comparison = Comparison(key=key, title=title, baseline=contenders[0].name, calls=calls)
    comparison.not_applicable.update(not_applicable)
    comparison.slices = len(_slice_sizes(calls, slices))

    def work(contender: SyncContender, count: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(count):
                contender.call()

        return run

    try:
        for contender in contenders:
            comparison.seconds[contender.name] = []
            comparison.failures[contender.name] = 0
            work(contender, WARMUP_CALLS)()
            if server is not None:
                server.reset()
                work(contender, calls)()
                comparison.notes[contender.name] = _connections_note(server)

        sizes = _slice_sizes(calls, slices)
        for round_number in range(rounds):
            collect_garbage()
            spent = dict.fromkeys(comparison.seconds, 0.0)
            for slice_number, size in enumerate(sizes):
                for contender in rotated(contenders, round_number + slice_number):
                    spent[contender.name] += timed(work(contender, size))
            for name, seconds in spent.items():
                comparison.seconds[name].append(seconds)
    finally:
        for contender in contenders:
            contender.close()
    return comparison


def compare_async(
    key: str,
    title: str,
    target: Target,
    *,
    calls: int,
    rounds: int,
    concurrency: int,
    slices: int = 5,
    server: Server | None = None,
    contenders_from: Sequence[type[AsyncContender]] = (),
    warmup_calls: int = WARMUP_CALLS * 5,
) -> Comparison:
    """``calls`` GETs by ``concurrency`` coroutines per contender and round, all on one event loop.

    ``contenders_from``: the contenders (the first is the baseline); ``ASYNC_CONTENDERS`` if empty.
    One that is ``unavailable()`` here is listed as not applicable, with the reason.
    """

    async def main() -> Comparison:
        contenders: list[AsyncContender] = []
        comparison = Comparison(key=key, title=title, baseline="", calls=calls)
        comparison.slices = len(_slice_sizes(calls, slices))
        for cls in contenders_from or ASYNC_CONTENDERS:
            why = cls.unavailable() or (cls.in_process_unavailable if target.in_process else None)
            if why:
                comparison.not_applicable[cls.name] = why
                continue
            contenders.append(cls(target))
        comparison.baseline = contenders[0].name
        try:
            for contender in contenders:
                await contender.open()
                comparison.seconds[contender.name] = []
                comparison.failures[contender.name] = 0
                comparison.failures[contender.name] += await run_concurrently(contender.call, warmup_calls, concurrency)
                if server is not None:
                    await asyncio.to_thread(server.reset)
                    comparison.failures[contender.name] += await run_concurrently(contender.call, calls, concurrency)
                    comparison.notes[contender.name] = await asyncio.to_thread(_connections_note, server)

            sizes = _slice_sizes(calls, slices)
            for round_number in range(rounds):
                collect_garbage()
                spent = dict.fromkeys(comparison.seconds, 0.0)
                for slice_number, size in enumerate(sizes):
                    for contender in rotated(contenders, round_number + slice_number):
                        failures = 0

                        async def work(contender: AsyncContender = contender, size: int = size) -> None:
                            nonlocal failures
                            failures = await run_concurrently(contender.call, size, concurrency)

                        spent[contender.name] += await atimed(work)
                        comparison.failures[contender.name] += failures
                for name, seconds in spent.items():
                    comparison.seconds[name].append(seconds)
        finally:
            for contender in contenders:
                await contender.close()
        return comparison

    return asyncio.run(main())


def _connections_note(server: Server) -> str:
    stats = server.stats()
    return f"{stats['connections']} TCP connection(s) for {stats['api_requests']:,} requests (census)"


def concurrency_sweep(server: Server, *, levels: list[int], calls: int, rounds: int) -> dict[str, Any]:
    """Throughput (requests per second, median of ``rounds``) of each async client at each concurrency."""
    target = Target(server.base_url, in_process=False)

    async def main() -> dict[str, Any]:
        contenders = [cls(target) for cls in ASYNC_CONTENDERS]
        seconds: dict[str, dict[int, list[float]]] = {c.name: {level: [] for level in levels} for c in contenders}
        try:
            for contender in contenders:
                await contender.open()
                await run_concurrently(contender.call, WARMUP_CALLS, 1)
            for round_number in range(rounds):
                collect_garbage()
                for level in levels:
                    for contender in rotated(contenders, round_number + level):
                        run: Callable[[], Any] = lambda c=contender, n=level: run_concurrently(c.call, calls, n)
                        seconds[contender.name][level].append(await atimed(run))
        finally:
            for contender in contenders:
                await contender.close()
        return {
            "levels": levels,
            "calls": calls,
            "rounds": rounds,
            "labels": {c.name: c.label for c in contenders},
            "throughput": {
                name: {str(level): Spread.of([calls / t for t in times]).as_dict() for level, times in by_level.items()}
                for name, by_level in seconds.items()
            },
        }

    return asyncio.run(main())


def breakdown(*, number: int, repeat: int) -> dict[str, Any]:
    """Where PacklyHook's in-process per-call overhead goes: its pieces timed alone (timeit).

    Reaches into the hook's private parts (``_tokens``, ``_auth``, ``_retry_policy``): a piece
    the provider no longer has is reported as ``None`` rather than failing the suite.
    """
    import statistics
    import timeit

    import httpx

    from benchmarks.contenders import MOCK_BASE_URL, AsyncPackly, Packly, RawHttpx

    target = Target(MOCK_BASE_URL, in_process=True)
    raw, packly = RawHttpx(target), Packly(target)
    hook = packly.hook
    pieces: dict[str, float | None] = {}

    def per_call(fn: Callable[[], Any]) -> float:
        return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6

    def piece(name: str, make: Callable[[], Callable[[], Any]]) -> None:
        try:
            pieces[name] = per_call(make())
        except Exception:  # noqa: BLE001 - the provider changed shape: say so, do not fail the suite
            pieces[name] = None

    try:
        response = raw.client.get("/v1/reseller/orders")
        request = hook.get_client().build_request("GET", "/v1/reseller/orders")

        def drive(flow_of: Callable[[httpx.Request], Any]) -> Callable[[], None]:
            def run() -> None:
                flow = flow_of(request)
                next(flow)
                try:
                    flow.send(response)
                except StopIteration:
                    pass

            return run

        piece("TokenSource.get() with a cached token", lambda: hook._tokens.get)
        piece(
            "PacklyBearerAuth flow for one request (token, header, 401 check)",
            lambda: drive(hook._auth.sync_auth_flow),
        )
        piece(
            "httpx's no-op Auth flow (what raw httpx runs instead)",
            lambda: drive(httpx.Auth().sync_auth_flow),
        )
        piece(
            "setting the Authorization header on a built request",
            lambda: lambda: request.headers.__setitem__("Authorization", "Bearer x"),
        )
        piece(
            "the retry loop around a send that succeeds",
            lambda: lambda: call(hook._shell(hook.get_conn()).retry_policy, lambda r: response, request),
        )
        # What the public API alone costs (goal 1's floor rows, over loopback): the two httpx
        # objects built around each call, the URL parsed once as the hook caches it.
        url, headers = request.url, {"Authorization": "Bearer x"}
        piece(
            "building the httpx.Request (a parsed URL, one header)",
            lambda: lambda: httpx.Request("GET", url, headers=headers),
        )
        raw_headers = response.headers.raw
        piece(
            "building the httpx.Response (status, headers, a small body)",
            lambda: lambda: httpx.Response(200, headers=raw_headers, content=response.content, request=request),
        )
    finally:
        raw.close()
        packly.close()

    async def async_pieces() -> None:
        contender = AsyncPackly(target)
        await contender.open()
        ahook = contender.hook
        loops = number

        async def per_acall(make: Callable[[], Callable[[], Any]]) -> float | None:
            try:
                fn = make()
                times = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    for _ in range(loops):
                        await fn()
                    times.append(time.perf_counter() - start)
                return statistics.median(times) / loops * 1e6
            except Exception:  # noqa: BLE001 - as in piece(): a piece that changed shape is left out
                return None

        pieces["await TokenSource.aget() with a cached token"] = await per_acall(lambda: ahook._tokens.aget)
        pieces["await PacklyHook.aget_client() (called by every arequest)"] = await per_acall(lambda: ahook.aget_client)
        await contender.close()

    asyncio.run(async_pieces())
    return {"number": number, "repeat": repeat, "us_per_call": pieces}
