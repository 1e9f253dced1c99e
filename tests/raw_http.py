"""A raw HTTP/1.1 server on loopback, for answers no well-behaved framework would send.

Each request is answered by ``respond(method, path, headers) -> bytes`` with the exact bytes
given (status line, headers and body), then the connection is closed. Used for bodies whose
framing is complete but whose content is not (a gzip stream cut short with a matching
``Content-Length``), which a proxy that re-frames a lost tail produces.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Respond = Callable[[str, str, dict[str, str]], bytes]


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A complete response: ``Content-Length`` is the length of ``body`` as given."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def token_answer(token: str = "raw-token-AAAA%2FAAA%3D", expires_in: int = 3600) -> bytes:
    body = json.dumps({"token_type": "bearer", "access_token": token, "expires_in": expires_in}).encode()
    return http_response(200, body, {"Content-Type": "application/json"})


def gzip_answer(body: bytes, *, keep: float = 1.0, content_type: str = "application/pdf") -> bytes:
    """``body`` gzipped, of which only the first ``keep`` share is sent, with a matching length."""
    compressed = gzip.compress(body, mtime=0)
    cut = compressed if keep >= 1.0 else compressed[: int(len(compressed) * keep)]
    return http_response(200, cut, {"Content-Type": content_type, "Content-Encoding": "gzip"})


@dataclass
class RawServer:
    base_url: str
    requests: list[tuple[str, str]] = field(default_factory=list)


def _read_request(conn: socket.socket) -> tuple[str, str, dict[str, str]] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return method, target.split("?", 1)[0], headers


@contextmanager
def raw_server(respond: Respond) -> Iterator[RawServer]:
    """Serve ``respond`` on 127.0.0.1 (a free port) in a background thread."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    server = RawServer(f"http://127.0.0.1:{listener.getsockname()[1]}")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(5)
                try:
                    request = _read_request(conn)
                    if request is None:
                        continue
                    server.requests.append((request[0], request[1]))
                    conn.sendall(respond(*request))
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        listener.close()
