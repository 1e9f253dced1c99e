"""A raw HTTP/1.1 server on 127.0.0.1 that answers each request with the bytes a test chooses.

The sandbox answers like a well-behaved Packly; hostile answers (a ``Content-Length`` that
lies, ``Content-Encoding: gzip`` over a plain body, a gzip stream cut short, a body that
trickles or never ends, a reset, no answer at all, a page echoing the request's
``Authorization``) need raw bytes on a real socket. ``loopback_server(respond)`` reads each
request (head and ``Content-Length`` body), records it, and writes what
``respond(request)`` returns: ``bytes`` (sent whole, then the connection is closed) or a
``Script`` that drives the socket itself (``trickle``, ``endless``, ``reset``, ``silence``).

Every connection carries one request and is served by a daemon thread. Leaving the ``with``
block stops everything: scripts watch a stop flag, every open socket is shut down (waking a
blocked read or write) and every thread is joined, so a failing test leaves nothing running.
``LoopbackListener`` (that machinery) and ``read_head`` also serve the test forward proxy in
``tests/integration/tls_proxy_helpers.py``.
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

TOKEN_PATH = "/v1/oauth2/token"
#: Per-socket timeout: a client that stalls mid-request or stops reading frees its thread.
SOCKET_TIMEOUT = 10.0


# -- reading a request ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A request's line and header fields as sent, and whatever arrived after the blank line."""

    method: str
    target: str
    version: str
    fields: list[tuple[str, str]]
    rest: bytes

    @property
    def headers(self) -> dict[str, str]:
        """The header fields by lower-case name (the last of a repeated one)."""
        return {name.lower(): value for name, value in self.fields}


def read_head(sock: socket.socket) -> Head | None:
    """Read up to the end of a request's head; ``None`` if the peer closed first or sent no HTTP."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ", 2)
    if len(parts) != 3:
        return None
    fields = [
        (name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines) if name.strip()
    ]
    return Head(parts[0], parts[1], parts[2], fields, rest)


@dataclass(frozen=True)
class RawRequest:
    """One request as the server received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]


def read_request(sock: socket.socket) -> RawRequest | None:
    """Read a request's head and its ``Content-Length`` body (what arrived of it, if the peer closed)."""
    head = read_head(sock)
    if head is None:
        return None
    headers = head.headers
    body = head.rest
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawRequest(head.method, head.target, headers, body)


# -- building answers -----------------------------------------------------------------------------


def response_head(status: int, reason: str, headers: Mapping[str, str]) -> bytes:
    """A status line and ``headers`` exactly as given, and the blank line."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_response(
    status: int,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    content_length: int | None = None,
    reason: str = "X",
) -> bytes:
    """The bytes of one answer, with ``Connection: close``.

    ``Content-Length`` is the length of ``body`` unless ``content_length`` claims another (a
    body cut short, or framed shorter than sent), or ``headers`` give their own
    ``Content-Length`` or ``Transfer-Encoding``.
    """
    given = dict(headers or {})
    names = {name.lower() for name in given}
    sent: dict[str, str] = {}
    if "content-length" not in names and "transfer-encoding" not in names:
        sent["Content-Length"] = str(len(body) if content_length is None else content_length)
    if "connection" not in names:
        sent["Connection"] = "close"
    return response_head(status, reason, {**sent, **given}) + body


def token_body(token: str = "loopback-test-token", expires_in: int = 3600) -> bytes:
    """A token response's JSON document."""
    return json.dumps({"token_type": "bearer", "access_token": token, "expires_in": expires_in}).encode()


def token_answer(token: str = "loopback-test-token", expires_in: int = 3600) -> bytes:
    """A complete, valid token response."""
    return http_response(200, token_body(token, expires_in), {"Content-Type": "application/json"})


def gzip_answer(body: bytes, *, keep: float = 1.0, content_type: str = "application/pdf") -> bytes:
    """``body`` gzipped, of which only the first ``keep`` share is sent, with a matching length
    (what a proxy that lost the tail and re-framed the rest sends)."""
    compressed = gzip.compress(body, mtime=0)
    cut = compressed if keep >= 1.0 else compressed[: int(len(compressed) * keep)]
    return http_response(200, cut, {"Content-Type": content_type, "Content-Encoding": "gzip"})


def gzip_bomb(decoded_mb: int) -> bytes:
    """``decoded_mb`` MB of zeros, gzipped (about 1 KB per MB), built without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(decoded_mb)]
    parts.append(compressor.flush())
    return b"".join(parts)


# -- answers that drive the socket ----------------------------------------------------------------


@dataclass
class Exchange:
    """The socket a request came on, for a ``Script`` to write to; ``stop`` is set when the server stops."""

    sock: socket.socket
    request: RawRequest
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

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (sooner if the server stops); ``False`` if it stopped."""
        return not self.stop.wait(seconds)


@dataclass(frozen=True)
class Script:
    """An answer that writes to the socket itself (over time, or not at all); the server
    closes the connection when ``play`` returns."""

    play: Callable[[Exchange], None]


Answer = bytes | Script
#: What a test gives the server: each request's answer.
Respond = Callable[[RawRequest], Answer]


def trickle(
    data: bytes, *, every: float = 0.05, chunk: int = 1, limit: float = 30.0, head_at_once: bool = False
) -> Script:
    """``data`` ``chunk`` bytes at a time, ``every`` seconds apart, for at most ``limit`` seconds
    (each read gets bytes in time, so no read timeout fires). With ``head_at_once``, everything
    up to the blank line after the headers goes at once and only the body trickles."""

    def play(exchange: Exchange) -> None:
        start = data.index(b"\r\n\r\n") + 4 if head_at_once else 0
        if start and not exchange.send(data[:start]):
            return
        started = time.monotonic()
        for index in range(start, len(data), chunk):
            if time.monotonic() - started > limit:
                return
            if not (exchange.send(data[index : index + chunk]) and exchange.pause(every)):
                return

    return Script(play)


def endless(every: float = 0.05, status: int = 200) -> Script:
    """A chunked JSON body that never ends: a small chunk every ``every`` seconds until the
    client leaves or the server stops."""

    def play(exchange: Exchange) -> None:
        head = response_head(
            status, "X", {"Connection": "close", "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        if not exchange.send(head + b"1\r\n[\r\n"):
            return
        while exchange.send(b"2\r\n0,\r\n") and exchange.pause(every):
            pass

    return Script(play)


def reset(after: bytes = b"") -> Script:
    """Send ``after`` (may be empty), then reset the connection (an RST, not a clean close)."""

    def play(exchange: Exchange) -> None:
        if after:
            exchange.send(after)
        exchange.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        exchange.sock.close()

    return Script(play)


def silence(limit: float = 30.0) -> Script:
    """Never answer: hold the connection open, silent, until the server stops (at most ``limit`` s)."""

    def play(exchange: Exchange) -> None:
        exchange.stop.wait(limit)

    return Script(play)


def token_then(api: Answer | Respond, token: Answer | None = None) -> Respond:
    """A Packly: the token endpoint answers ``token`` (a valid token by default), anything else
    ``api`` (an answer, or a function of the request)."""
    token = token_answer() if token is None else token

    def respond(request: RawRequest) -> Answer:
        if request.path == TOKEN_PATH:
            return token
        return api if isinstance(api, (bytes, Script)) else api(request)

    return respond


# -- the server -----------------------------------------------------------------------------------


class LoopbackListener:
    """Accept connections on 127.0.0.1 (a free port), each served by ``serve`` on a daemon thread.

    ``close()`` stops accepting, sets ``stopping``, shuts down every tracked socket (so a
    blocked read or write returns) and joins every thread: nothing outlives it.
    """

    def __init__(self, serve: Callable[[socket.socket], None], name: str = "loopback") -> None:
        self._serve = serve
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)
        self._name = name

    def start(self) -> None:
        self._acceptor.start()

    def track(self, sock: socket.socket) -> socket.socket:
        """Have ``close()`` shut ``sock`` down too (an upstream socket a handler opened)."""
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(
                target=self._serve, args=(self.track(sock),), name=f"{self._name}-conn", daemon=True
            )
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        self.stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            sock.close()


@dataclass
class LoopbackServer:
    """Where the server listens and what it was asked; ``respond`` may be swapped at any time."""

    base_url: str
    respond: Respond
    requests: list[RawRequest] = field(default_factory=list)

    @property
    def calls(self) -> list[tuple[str, str]]:
        """``(method, path)`` of each request, in arrival order."""
        return [(request.method, request.path) for request in self.requests]


@contextmanager
def loopback_server(respond: Respond) -> Iterator[LoopbackServer]:
    """Serve ``respond`` on 127.0.0.1 (a free port) until the ``with`` block ends."""

    def serve(sock: socket.socket) -> None:
        with sock:
            sock.settimeout(SOCKET_TIMEOUT)
            try:
                request = read_request(sock)
                if request is None:
                    return
                server.requests.append(request)
                answer = server.respond(request)
                if isinstance(answer, Script):
                    answer.play(Exchange(sock, request, listener.stopping))
                else:
                    sock.sendall(answer)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                return

    listener = LoopbackListener(serve, name="loopback-server")
    server = LoopbackServer(f"http://127.0.0.1:{listener.port}", respond)
    listener.start()
    try:
        yield server
    finally:
        listener.close()


@contextmanager
def unread_server() -> Iterator[LoopbackServer]:
    """A Packly that answers token requests but never reads another request's body: it takes
    the head and then holds the connection, silent, so a large upload stalls once the socket
    buffers are full (a write timeout). ``requests`` records each held request's head."""

    def serve(sock: socket.socket) -> None:
        with sock:
            sock.settimeout(SOCKET_TIMEOUT)
            try:
                head = read_head(sock)
                if head is None:
                    return
                if head.target.split("?", 1)[0] == TOKEN_PATH:
                    sock.sendall(token_answer())
                    sock.shutdown(socket.SHUT_WR)
                    return
                server.requests.append(RawRequest(head.method, head.target, head.headers, head.rest))
                listener.stopping.wait(SOCKET_TIMEOUT)
            except OSError:
                return

    listener = LoopbackListener(serve, name="unread-server")
    server = LoopbackServer(f"http://127.0.0.1:{listener.port}", lambda request: b"")
    listener.start()
    try:
        yield server
    finally:
        listener.close()


@contextmanager
def full_backlog(settle: float = 0.2) -> Iterator[str]:
    """The base URL of a listener that never accepts and whose accept queue is full: Linux
    then drops every further SYN, so a connect gets no answer at all (a connect timeout),
    deterministically and on loopback, unlike a "non-routable" address whose fate depends on
    the machine's routes. The queue is filled by connecting until one connect does not
    complete within ``settle`` seconds."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(64):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(address)
            _, writable, _ = select.select([], [filler], [], settle)
            if not writable:
                break
        else:
            raise RuntimeError("the listener's accept queue never filled: cannot make a connect time out")
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (a port just freed): connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"
