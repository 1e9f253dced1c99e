"""Bounds on one Packly call: how long it may take in all, and how much of a body is read.

httpx bounds each wait of a call (one connect, one write, one read, the wait for a pooled
connection), never the call itself: a server that trickles a byte per read, or a chunked
answer that never ends, keeps a call going for as long as it likes. And ``response.read()``
holds the whole decoded body in memory: 300 KB of gzip can decode to gigabytes. This module
holds the two bounds the hook applies to every request, sync and async alike:

* a ``Deadline``: an absolute ``time.monotonic()`` by which the whole call (every attempt,
  every retry wait and the whole body) must end. The I/O shells give each attempt phase
  timeouts no longer than the time left, check the deadline between body chunks
  (``bound_body``: sync and async), and the async shell also cancels the call at the deadline
  (``cancel_after``: asyncio's timeout, or anyio's off asyncio). A call made while
  another is in flight (the token request a call needs) gets the earlier of its own deadline
  and its caller's (a context variable);
* ``read_limited``/``aread_limited``: read a body through httpx's incremental decoder and stop
  as soon as more than ``limit`` decoded bytes came (token responses and error bodies, whose
  useful part is small). Compressed bodies are fed to the decoder in small pieces, so one
  piece cannot decode to more than a few MB either.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import anyio
import httpx

from airflow_provider_packly.exceptions import PacklyTransportError

__all__ = [
    "DEADLINE_EXTENSION",
    "MAX_ERROR_BODY_BYTES",
    "Deadline",
    "aread_limited",
    "bound_body",
    "read_limited",
]

#: ``request.extensions`` key holding the request's ``Deadline`` (the retry policy reads it).
DEADLINE_EXTENSION = "packly_deadline"
#: ``response.extensions`` key set when ``read_limited`` stopped before the body's end.
TRUNCATED_EXTENSION = "packly_body_truncated"
#: How much of an error body is read: Packly's error envelope is well under 1 KiB, and only
#: its first 200 characters are ever quoted when it is not the envelope.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Compressed bytes handed to httpx's decoder at once. Deflate expands at most ~1,030 times,
#: so one piece decodes to at most ~8 MB before the byte count is checked again.
_COMPRESSED_PIECE = 8 * 1024

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("packly_deadline", default=None)


@dataclass(frozen=True)
class Deadline:
    """When a call must have ended (``at``, monotonic) and the budget it was given (``seconds``)."""

    at: float
    seconds: float

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, or the enclosing call's if that one ends earlier."""
        own = cls(time.monotonic() + seconds, seconds)
        outer = _current.get()
        return outer if outer is not None and outer.at < own.at else own

    def remaining(self) -> float:
        return self.at - time.monotonic()

    @contextlib.contextmanager
    def active(self) -> Iterator[Deadline]:
        """Make this the deadline of calls made inside the block (the token request of a call)."""
        reset = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(reset)

    def apply(self, request: httpx.Request, timeouts: httpx.Timeout) -> None:
        """Before each attempt: record the deadline, and cut each phase timeout to the time left.

        Then no single wait (a connect, a pooled connection, a read) can start longer than
        the call has left. Raises the deadline error if no time is left.
        """
        left = self.remaining()
        if left <= 0:
            raise self.error(request)
        request.extensions[DEADLINE_EXTENSION] = self
        request.extensions["timeout"] = {
            phase: left if limit is None else min(limit, left) for phase, limit in timeouts.as_dict().items()
        }

    def explains(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a timeout that fired because the deadline had come (not a phase's own)."""
        return isinstance(exc, httpx.TimeoutException) and self.remaining() <= 0

    def error(self, request: httpx.Request) -> PacklyTransportError:
        """What the pipeline owner reads: which call, its deadline, and the setting that changes it."""
        attempts = int(request.extensions.get("packly_attempts", 1))
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        return PacklyTransportError(
            f"{request.method} {request.url} did not finish within its overall deadline of {self.seconds:g} s{tries}: "
            "Packly, or something between, answered too slowly or kept sending. Raise the connection's "
            "request_deadline_seconds (by default the retry time budget plus each timeout once), or retry later."
        )


def current_deadline() -> Deadline | None:
    """The deadline of the call in progress in this thread or task, if any."""
    return _current.get()


#: asyncio has its own timeout context (Python 3.11+); ``cancel_after`` uses it on asyncio.
NATIVE_TIMEOUT = sys.version_info >= (3, 11)
_T = TypeVar("_T")


async def cancel_after(seconds: float | None, call: Callable[[], Awaitable[_T]]) -> _T | None:
    """``await call()``, cancelled wherever it waits once ``seconds`` have passed (then ``None``;
    ``seconds=None``: no limit). A ``TimeoutError`` of the call's own is raised as it is.

    On asyncio, asyncio's own timeout (Python 3.11+): an anyio scope finds its backend and task
    on every call (py-spy: about 15% of an in-memory ``arequest``, about a tenth of the
    transport's time where calls wait for the pool); anyio elsewhere.
    """
    # The version test again for mypy (checked for 3.10); NATIVE_TIMEOUT lets tests take either path.
    if sys.version_info >= (3, 11) and NATIVE_TIMEOUT and asyncio._get_running_loop() is not None:
        try:
            async with asyncio.timeout(seconds) as scope:
                return await call()
        except TimeoutError:
            if scope.expired():
                return None
            raise
    with anyio.move_on_after(seconds):
        return await call()
    return None


# -- the deadline between body chunks ------------------------------------------------------------


def bound_body(response: httpx.Response, deadline: Deadline, *, asynchronous: bool = False) -> None:
    """Check ``deadline`` before each chunk of ``response``'s body, however it is read later.

    Replaces ``response.stream`` (the raw bytes httpx's ``read``/``iter_bytes`` pull from) with
    a wrapper; a compressed body is also cut into small pieces for the decoder (see the module).
    ``asynchronous``: read with ``aread``/``aiter_bytes`` (a transport's stream may be both kinds).
    """
    split = response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
    inner = response.stream
    if asynchronous:
        response.stream = _AsyncDeadlineStream(inner, deadline, response.request, split)  # type: ignore[arg-type]
    else:
        response.stream = _DeadlineStream(inner, deadline, response.request, split)  # type: ignore[arg-type]


def _pieces(chunk: bytes, split: bool) -> Iterator[bytes]:
    if not split or len(chunk) <= _COMPRESSED_PIECE:
        yield chunk
        return
    view = memoryview(chunk)
    for start in range(0, len(chunk), _COMPRESSED_PIECE):
        yield bytes(view[start : start + _COMPRESSED_PIECE])


class _DeadlineStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, deadline: Deadline, request: httpx.Request, split: bool) -> None:
        self._inner = inner
        self._deadline = deadline
        self._request = request
        self._split = split

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            if self._deadline.remaining() <= 0:
                raise self._deadline.error(self._request)
            yield from _pieces(chunk, self._split)

    def close(self) -> None:
        self._inner.close()


class _AsyncDeadlineStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, deadline: Deadline, request: httpx.Request, split: bool) -> None:
        self._inner = inner
        self._deadline = deadline
        self._request = request
        self._split = split

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            if self._deadline.remaining() <= 0:
                raise self._deadline.error(self._request)
            for piece in _pieces(chunk, self._split):
                yield piece

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- bodies read only up to a limit --------------------------------------------------------------


def read_limited(response: httpx.Response, limit: int) -> httpx.Response:
    """``response`` with its body read, but never more than ``limit + 1`` decoded bytes of it.

    Stops, and closes the response, as soon as the body passes ``limit``; the answer is then a
    copy of ``response`` holding the first ``limit + 1`` bytes, marked with
    ``TRUNCATED_EXTENSION``, so ``len(content) > limit`` tells that it did not fit.
    """
    kept: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            kept.append(chunk[: limit + 1 - size])
            size += len(kept[-1])
            if size > limit:
                break
    finally:
        response.close()
    return _with_body(response, b"".join(kept), truncated=size > limit)


async def aread_limited(response: httpx.Response, limit: int) -> httpx.Response:
    """``read_limited`` for coroutines."""
    kept: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            kept.append(chunk[: limit + 1 - size])
            size += len(kept[-1])
            if size > limit:
                break
    finally:
        await response.aclose()
    return _with_body(response, b"".join(kept), truncated=size > limit)


_BODY_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def _with_body(response: httpx.Response, content: bytes, *, truncated: bool) -> httpx.Response:
    """A read response with ``content`` (already decoded) as its body, for the shared rules."""
    headers = [(name, value) for name, value in response.headers.raw if name.lower() not in _BODY_HEADERS]
    extensions = dict(response.extensions)
    if truncated:
        extensions[TRUNCATED_EXTENSION] = True
    return httpx.Response(
        response.status_code, headers=headers, content=content, request=response.request, extensions=extensions
    )
