"""A raw HTTP/1.1 server on loopback that answers each request with bytes a test chooses.

The fuzz suite needs answers no well-behaved server framework would send: a ``Content-Length``
that lies, ``Content-Encoding: gzip`` over a plain body, a body that trickles or is cut off, a
page that echoes the request's ``Authorization`` header. ``ScriptedServer`` reads each request
(head and ``Content-Length`` body), records it, and hands it to ``respond``, which returns the
exact bytes to write (or a ``Trickle`` of them); the connection is closed after every answer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Trickle:
    """Write ``data`` ``chunk`` bytes at a time, ``pause`` seconds apart, for at most ``limit`` seconds."""

    data: bytes
    chunk: int = 1
    pause: float = 0.05
    limit: float = 30.0


Answer = bytes | Trickle
Responder = Callable[[SeenRequest], Answer]


class ScriptedServer:
    """Where the server listens and what it was asked; ``respond`` may be swapped at any time."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[SeenRequest] = []
        self.port = 0
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"ScriptedServer({self.base_url}, {len(self.requests)} requests)"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, listener: socket.socket) -> None:
        listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                request = _read_request(conn)
                if request is None:
                    return
                self.requests.append(request)
                answer = self.respond(request)
                if isinstance(answer, Trickle):
                    started = time.monotonic()
                    for start in range(0, len(answer.data), answer.chunk):
                        if self._stop.is_set() or time.monotonic() - started > answer.limit:
                            return
                        conn.sendall(answer.data[start : start + answer.chunk])
                        time.sleep(answer.pause)
                else:
                    conn.sendall(answer)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                return


def _read_request(conn: socket.socket) -> SeenRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return SeenRequest(method, path, headers, body)


def http_response(status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, length: int | None = None) -> bytes:
    """The bytes of one HTTP/1.1 answer; ``length`` overrides the ``Content-Length`` sent."""
    lines = [f"HTTP/1.1 {status} X"]
    sent_headers = {"Connection": "close", **(headers or {})}
    if "Content-Length" not in sent_headers and "Transfer-Encoding" not in sent_headers:
        sent_headers["Content-Length"] = str(len(body) if length is None else length)
    lines += [f"{name}: {value}" for name, value in sent_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@contextmanager
def scripted_server(respond: Responder) -> Iterator[ScriptedServer]:
    server = ScriptedServer(respond)
    listener = socket.create_server(("127.0.0.1", 0))
    server.port = listener.getsockname()[1]
    thread = threading.Thread(target=server._serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server._stop.set()
        thread.join(timeout=5)
        listener.close()
