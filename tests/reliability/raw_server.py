"""A tiny HTTP/1.1 server on loopback that answers with exactly the bytes a test scripts.

The sandbox answers like a well-behaved Packly; hostile behaviours (a body that is not the
encoding its headers claim, a connection dropped mid-body, a header no framework would send)
need raw bytes on a real socket. Each connection serves one request, then closes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import json


@dataclass(frozen=True)
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


#: A handler returns the bytes to send; the connection is closed after them.
Handler = Callable[[RawRequest], bytes]


def http_response(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, content_length: int | None = None
) -> bytes:
    """A response's bytes; ``content_length`` may claim more than ``body`` holds (a cut body)."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body) if content_length is None else content_length}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def token_answer(token: str, expires_in: int = 3600) -> bytes:
    body = json.dumps({"token_type": "bearer", "access_token": token, "expires_in": expires_in}).encode()
    return http_response(200, body, {"Content-Type": "application/json"})


@dataclass
class RawServer:
    base_url: str
    requests: list[RawRequest] = field(default_factory=list)


@contextmanager
def raw_server(handler: Handler) -> Iterator[RawServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    server = RawServer(f"http://127.0.0.1:{listener.getsockname()[1]}")
    stopping = threading.Event()
    workers: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            while len(body) < int(headers.get("content-length", "0")):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            method, target, _ = request_line.split(" ", 2)
            request = RawRequest(method, target, headers, body)
            server.requests.append(request)
            try:
                conn.sendall(handler(request))
            except OSError:
                pass

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            worker = threading.Thread(target=serve, args=(conn,), daemon=True)
            workers.append(worker)
            worker.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        stopping.set()
        acceptor.join()
        listener.close()
        for worker in workers:
            worker.join(timeout=10)
