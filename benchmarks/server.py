"""A tiny Packly look-alike for the benchmarks, served by uvicorn in its own process.

``python -m benchmarks.server --port 0 [--token-delay S] [--token-lifetime T]`` prints one line
``listening on http://127.0.0.1:PORT`` and serves until terminated. It answers:

* ``POST /v1/oauth2/token``: checks ``Authorization: Basic`` against the sandbox's default
  credentials (401 with Packly's error envelope otherwise), waits ``--token-delay`` seconds
  without blocking its loop (a slow token endpoint), and issues a bearer token;
* ``GET /v1/reseller/orders``: checks the bearer token (any token it issued) and answers a
  small fixed JSON body, so that the client's cost, not the server's, is what is compared;
* ``GET /_bench/stats`` (``token_requests``, ``api_requests``, and ``connections``: the client
  ports its token and API requests came from, i.e. the TCP connections the client opened) and
  ``POST /_bench/reset`` (zeroes them; ``?token_delay=S`` also changes the token delay).

A plain ASGI callable (no framework) keeps the server's share of the two cores small. The
provider's own sandbox is used where its behaviour matters (the triggerer benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import socket
import sys
from typing import Any
from urllib.parse import parse_qsl

TOKEN_PATH = "/v1/oauth2/token"
API_PATH = "/v1/reseller/orders"
CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"

_JSON = [(b"content-type", b"application/json")]
API_BODY = json.dumps(
    {
        "request": {"method": "GET", "path": API_PATH},
        "response": [{"id": "ORD-0001", "status": "paid"}],
    }
).encode()
UNAUTHORIZED_BODY = json.dumps(
    {"error": {"code": "UNAUTHORIZED", "message": "Invalid client credentials", "errors": []}}
).encode()


class BenchApp:
    """The ASGI app; its counters are what ``/_bench/stats`` reports."""

    def __init__(self, token_delay: float = 0.0, token_lifetime: int = 3600) -> None:
        self.token_delay = token_delay
        self.token_lifetime = token_lifetime
        self.expected_basic = b"Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode())
        self.tokens: set[bytes] = set()
        self._serial = itertools.count(1)
        self.token_requests = 0
        self.api_requests = 0
        self.client_ports: set[int] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        headers = dict(scope["headers"])
        if path == API_PATH and method == "GET":
            self.api_requests += 1
            self._count_connection(scope)
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() == b"bearer" and token in self.tokens:
                await _respond(send, 200, API_BODY)
            else:
                await _respond(send, 401, UNAUTHORIZED_BODY)
        elif path == TOKEN_PATH and method == "POST":
            self.token_requests += 1
            self._count_connection(scope)
            await _drain(receive)
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if headers.get(b"authorization") != self.expected_basic:
                await _respond(send, 401, UNAUTHORIZED_BODY)
                return
            token = f"bench-token-{next(self._serial):06d}".encode()
            self.tokens.add(token)
            body = {
                "token_type": "bearer",
                "access_token": token.decode(),
                "expires_in": self.token_lifetime,
            }
            await _respond(send, 200, json.dumps(body).encode())
        elif path == "/_bench/stats":
            stats = {
                "token_requests": self.token_requests,
                "api_requests": self.api_requests,
                "connections": len(self.client_ports),
            }
            await _respond(send, 200, json.dumps(stats).encode())
        elif path == "/_bench/reset" and method == "POST":
            self.token_requests = self.api_requests = 0
            self.client_ports.clear()
            delay = dict(parse_qsl(scope.get("query_string", b"").decode())).get("token_delay")
            if delay is not None:
                self.token_delay = float(delay)
            await _respond(send, 200, b"{}")
        else:
            await _respond(send, 404, b'{"error": {"code": "NOT_FOUND", "message": "no such path"}}')

    def _count_connection(self, scope: dict[str, Any]) -> None:
        client = scope.get("client")
        if client:
            self.client_ports.add(client[1])


async def _drain(receive: Any) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 for any free port (default)")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds the token endpoint waits")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="expires_in of issued tokens")
    args = parser.parse_args(argv)

    import uvicorn

    app = BenchApp(token_delay=args.token_delay, token_lifetime=args.token_lifetime)

    class _Announcing(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.servers and self.servers[0].sockets:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                print(f"listening on http://{host}:{port}", flush=True)

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
    )
    _Announcing(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
