"""A tiny raw-socket HTTP/1.1 server on loopback that misbehaves on purpose, for limit tests.

The sandbox answers like Packly; this one answers like a broken proxy: it trickles a body a
byte at a time, sends a chunked body that never ends, or a gzip bomb. Each connection carries
one request (``Connection: close``) and is served by a daemon thread; leaving the ``with``
block stops everything within a second (the trickles watch a stop flag), so a test that
fails cannot leave a sender running.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: What a route does with a connection: write whatever it likes to it.
Behaviour = Callable[["Exchange"], None]

TOKEN_PATH = "/v1/oauth2/token"
TOKEN_BODY = json.dumps({"token_type": "bearer", "access_token": "hostile-test-token", "expires_in": 3600}).encode()


@dataclass
class Exchange:
    """One request as received, and the socket to answer on."""

    sock: socket.socket
    method: str
    path: str
    stop: threading.Event

    def send(self, data: bytes) -> bool:
        """Send ``data``; ``False`` once the client has gone or the server is stopping."""
        if self.stop.is_set():
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def head(self, status: str, headers: dict[str, str]) -> bool:
        lines = [f"HTTP/1.1 {status}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        return self.send("\r\n".join(lines).encode())

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (sooner if the server stops); ``False`` if it stopped."""
        return not self.stop.wait(seconds)


def answer(status: str, body: bytes, content_type: str = "application/json", **headers: str) -> Behaviour:
    """A complete, well-formed answer."""

    def run(exchange: Exchange) -> None:
        exchange.head(status, {"Content-Type": content_type, "Content-Length": str(len(body)), **headers})
        exchange.send(body)

    return run


def trickle(body: bytes, every: float = 0.2, status: str = "200 OK") -> Behaviour:
    """Headers at once, then the body one byte per ``every`` seconds (each read gets a byte in
    time, so no read timeout ever fires)."""

    def run(exchange: Exchange) -> None:
        if not exchange.head(status, {"Content-Type": "application/json", "Content-Length": str(len(body))}):
            return
        for index in range(len(body)):
            if not (exchange.send(body[index : index + 1]) and exchange.pause(every)):
                return

    return run


def endless(every: float = 0.05, status: str = "200 OK") -> Behaviour:
    """A chunked body that never ends: a small chunk every ``every`` seconds."""

    def run(exchange: Exchange) -> None:
        if not exchange.head(status, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}):
            return
        if not exchange.send(b'1\r\n[\r\n'):
            return
        while exchange.send(b"2\r\n0,\r\n") and exchange.pause(every):
            pass

    return run


def gzip_bomb(decoded_mb: int) -> bytes:
    """``decoded_mb`` MB of zeros, gzipped (about 1 KB per MB), built without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(decoded_mb)]
    parts.append(compressor.flush())
    return b"".join(parts)


@dataclass
class HostileServer:
    base_url: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: Local ports the server saw connections from, in arrival order.
    client_ports: list[int] = field(default_factory=list)


@contextmanager
def hostile_server(routes: Callable[[str, str], Behaviour]) -> Iterator[HostileServer]:
    """Serve on 127.0.0.1; ``routes(method, path)`` picks each request's behaviour."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    server = HostileServer(f"http://127.0.0.1:{listener.getsockname()[1]}")
    threads: list[threading.Thread] = []
    sockets: list[socket.socket] = []

    def serve(sock: socket.socket) -> None:
        with sock:
            sock.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = next((int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")), 0)
                while len(rest) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
            except OSError:
                return
            path = target.split("?", 1)[0]
            server.requests.append((method, path))
            routes(method, path)(Exchange(sock, method, path, stop))

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, address = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            server.client_ports.append(address[1])
            sockets.append(sock)
            thread = threading.Thread(target=serve, args=(sock,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass


def token_then(api: Behaviour, token: Behaviour | None = None) -> Callable[[str, str], Behaviour]:
    """Routes: the token endpoint answers ``token`` (a valid token by default), anything else ``api``."""
    good_token = answer("200 OK", TOKEN_BODY)
    return lambda method, path: (token or good_token) if path == TOKEN_PATH else api


def elapsed_since(started: float) -> float:
    return time.monotonic() - started
