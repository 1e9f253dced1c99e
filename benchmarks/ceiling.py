"""The limit every ratio is read against: the server's ceiling and the fastest raw client.

``python -m benchmarks.ceiling --port 0`` serves a raw asyncio server (an ``asyncio.Protocol``,
no HTTP framework, no parsing beyond finding the end of each request head) that answers every
request with the same small JSON body as ``benchmarks.server``, keeping the connection open.
It prints ``listening on http://127.0.0.1:PORT`` and serves until terminated.

``measure`` runs each raw async client available in the ``bench`` group (raw
``httpx.AsyncClient``, raw ``aiohttp.ClientSession`` and raw pyreqwest, each with a static
bearer header) at
the suite's concurrency against that raw server and against the benchmark server the
contenders of section 2 use, interleaved round by round like every other comparison. Then:

* the **server ceiling** is the requests per second the fastest client gets from the raw
  server: no client measured here goes faster against any server on this machine, so a ratio
  can be read against it (client and server share the machine's cores);
* the **fastest raw client's µs per call** against the benchmark server is the floor for the
  contenders of section 2, measured on the same server and work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from typing import Any

import httpx

from benchmarks._common import API_PATH, Server, Spread, atimed, collect_garbage, rotated, serve
from benchmarks.contenders import AsyncContender, RawAsyncHttpx, Target, pyreqwest_unavailable, run_concurrently
from benchmarks.server import API_BODY

#: Every answer of the raw server: a keep-alive 200 with the benchmark server's JSON body.
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(API_BODY)).encode()
    + b"\r\n\r\n"
    + API_BODY
)
STATIC_TOKEN = "ceiling-static-token"
WARMUP_CALLS = 100


class RawProtocol(asyncio.Protocol):
    """One connection: one ``ANSWER`` per request head received (GETs only: no body to skip)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        heads = self.buffer.count(b"\r\n\r\n")
        if heads:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(ANSWER * heads)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawProtocol, "127.0.0.1", port, backlog=1024)
    sock: socket.socket = server.sockets[0]
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def raw_server() -> contextlib.AbstractContextManager[Server]:
    """The raw asyncio server in a subprocess (its own interpreter and GIL)."""
    return serve(["-m", "benchmarks.ceiling", "--port", "0"], "/")


class _RawStatic(AsyncContender):
    """A raw client sending a static bearer token: the given one (the raw server issues none),
    else one fetched from the benchmark server."""

    def __init__(self, target: Target, token: str | None = None) -> None:
        self.target = target
        self.token = token

    async def _authorization(self) -> dict[str, str]:
        """The ``Authorization`` header; sets ``self.url``, the API path to call."""
        token = self.token or await asyncio.to_thread(self.target.static_token)
        self.url = self.target.base_url + API_PATH
        return {"Authorization": f"Bearer {token}"}


class RawAiohttp(_RawStatic):
    name = "raw-aiohttp"
    label = "raw aiohttp ClientSession, static Bearer header"

    async def open(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(headers=await self._authorization())

    async def call(self) -> None:
        async with self.session.get(self.url) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"unexpected HTTP {response.status}")

    async def close(self) -> None:
        await self.session.close()


class _RawHttpxStatic(RawAsyncHttpx):
    """Raw ``httpx.AsyncClient`` with a given token (the raw server issues none)."""

    def __init__(self, target: Target, token: str) -> None:
        super().__init__(target)
        self.token = token

    async def open(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            base_url=self.target.base_url, headers={"Authorization": f"Bearer {self.token}"}
        )


class RawPyreqwest(_RawStatic):
    """pyreqwest's own API (a Rust HTTP engine), the fastest raw client issue 12 measured."""

    name = "raw-pyreqwest"
    label = "raw pyreqwest Client (Rust), static Bearer header"

    @classmethod
    def unavailable(cls) -> str | None:
        return pyreqwest_unavailable()

    async def open(self) -> None:
        from pyreqwest.client import ClientBuilder

        self.client = ClientBuilder().default_headers(await self._authorization()).build()

    async def call(self) -> None:
        response = await self.client.get(self.url).build().send()
        await response.bytes()
        if response.status != 200:
            raise RuntimeError(f"unexpected HTTP {response.status}")

    async def close(self) -> None:
        await self.client.close()


class _HttpxEdges(_RawStatic):
    """A raw client's call wrapped in the two httpx objects ``arequest`` must hand back: an
    ``httpx.Request`` (URL parsed once, as the hook caches it) and the ``httpx.Response`` built
    from the answer. Nothing else: no deadline, retries, token cache, bounded body or metrics.

    So this is the least any ``arequest`` returning an ``httpx.Response`` can cost over that
    engine: where it is above goal 1's 0.9x of ``HttpAsyncHook``, no implementation meets the
    goal at that concurrency while the public API stays httpx."""

    http_url: httpx.URL
    edge_headers: dict[str, str]

    async def _authorization(self) -> dict[str, str]:
        """The raw client's header, kept for the ``httpx.Request`` too, with the URL parsed once."""
        self.edge_headers = await super()._authorization()
        self.http_url = httpx.URL(self.url)
        return self.edge_headers

    def _response(self, status: int, headers: Any, body: bytes) -> httpx.Response:
        request = httpx.Request("GET", self.http_url, headers=self.edge_headers)
        response = httpx.Response(status, headers=headers, content=body, request=request)
        if response.status_code != 200:
            raise RuntimeError(f"unexpected HTTP {response.status_code}")
        return response


class FloorAiohttp(_HttpxEdges, RawAiohttp):
    name = "floor-aiohttp-httpx-edges"
    label = "floor: raw aiohttp with only an httpx.Request and httpx.Response built around each call"

    async def call(self) -> None:
        async with self.session.get(self.url) as response:
            self._response(response.status, response.raw_headers, await response.read())


class FloorPyreqwest(_HttpxEdges, RawPyreqwest):
    name = "floor-pyreqwest-httpx-edges"
    label = "floor: raw pyreqwest with only an httpx.Request and httpx.Response built around each call"

    async def call(self) -> None:
        response = await self.client.get(self.url).build().send()
        body = bytes(await response.bytes())
        self._response(response.status, list(response.headers.items()), body)


def _clients(target: Target, token: str) -> list[AsyncContender]:
    clients: list[AsyncContender] = [_RawHttpxStatic(target, token), RawAiohttp(target, token)]
    if RawPyreqwest.unavailable() is None:
        clients.append(RawPyreqwest(target, token))
    return clients


def measure(bench: Server, *, calls: int, rounds: int, concurrency: int) -> dict[str, Any]:
    """Each raw client against the raw server and the benchmark server ``bench``, interleaved."""
    bench_target = Target(bench.base_url, in_process=False)
    token = bench_target.static_token()
    with raw_server() as raw:
        raw_target = Target(raw.base_url, in_process=False)

        async def main() -> dict[str, dict[str, list[float]]]:
            runs = {"raw_server": _clients(raw_target, STATIC_TOKEN), "bench_server": _clients(bench_target, token)}
            seconds: dict[str, dict[str, list[float]]] = {where: {} for where in runs}
            contenders = [(where, client) for where, clients in runs.items() for client in clients]
            try:
                for where, client in contenders:
                    await client.open()
                    seconds[where][client.name] = []
                    failures = await run_concurrently(client.call, WARMUP_CALLS, concurrency)
                    if failures:
                        raise RuntimeError(f"{client.name} failed {failures} warm-up calls against the {where}")
                for round_number in range(rounds):
                    collect_garbage()
                    for where, client in rotated(contenders, round_number):
                        spent = await atimed(lambda c=client: run_concurrently(c.call, calls, concurrency))
                        seconds[where][client.name].append(spent)
            finally:
                for _, client in contenders:
                    await client.close()
            return seconds

        seconds = asyncio.run(main())
    labels = {client.name: client.label for client in _clients(raw_target, STATIC_TOKEN)}
    return summarise(seconds, labels, calls=calls, rounds=rounds, concurrency=concurrency)


def summarise(
    seconds: dict[str, dict[str, list[float]]], labels: dict[str, str], *, calls: int, rounds: int, concurrency: int
) -> dict[str, Any]:
    """Requests per second and µs per call of each client on each server; the fastest client
    is the one with the most requests per second from the raw server."""
    table: dict[str, dict[str, Any]] = {}
    for where, by_client in seconds.items():
        for name, times in by_client.items():
            row = table.setdefault(name, {"label": labels.get(name, "")})
            row[where] = {
                "requests_per_second": Spread.of([calls / t for t in times if t > 0]).as_dict(),
                "us_per_call": Spread.of([t / calls * 1e6 for t in times]).as_dict(),
            }
    fastest = max(table, key=lambda name: table[name]["raw_server"]["requests_per_second"]["median"])
    return {
        "calls": calls,
        "rounds": rounds,
        "concurrency": concurrency,
        "clients": table,
        "fastest": fastest,
        "ceiling_requests_per_second": table[fastest]["raw_server"]["requests_per_second"],
        "fastest_us_per_call": table[fastest]["bench_server"]["us_per_call"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
