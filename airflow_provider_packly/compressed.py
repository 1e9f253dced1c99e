"""A compressed body must arrive whole: check the end of its gzip or deflate stream.

HTTP framing alone cannot tell a whole body from a cut one when whoever cut it also re-framed
it (a proxy that lost the tail of a gzip answer and sends what it has with a matching
``Content-Length``). The compressed stream can: gzip ends with a CRC and a length, deflate
with a final block. httpx decodes both but never checks that the stream ended, so a cut
dieline came back as a shorter "success". This module checks it, for every response of the
hook's clients (token, API, error and streamed bodies alike), through one mechanism: a
response event hook that wraps the raw byte stream in :class:`CompressedEndCheck`. The
provider's own decoder state runs beside httpx's; the cost is one more decompression of the
same bytes (a few microseconds for a JSON answer).

Only the encodings httpx decodes without optional packages are checked (``gzip``,
``deflate``); the provider asks for no others (httpx asks for ``br``/``zstd`` only when the
``brotli``/``zstandard`` packages are installed, and then those bodies are not checked).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

from airflow_provider_packly.exceptions import PacklyIncompleteBodyError

__all__ = ["CompressedEndCheck", "acheck_compressed_end", "check_compressed_end"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_STEP_BYTES = 64 * 1024


class CompressedEndCheck:
    """Follows one response's compressed bytes; :meth:`finish` raises if the stream did not end.

    Pure (no I/O): fed the raw bytes as they arrive, by the sync and async streams alike.
    Only the outermost coding (the last one listed in ``Content-Encoding``) is followed: if its
    stream ended with its checksum, what it wraps arrived as sent.
    """

    def __init__(self, coding: str, what: str) -> None:
        self.coding = coding
        self.what = what
        self.received = 0
        self._first = True
        self._broken = False
        self._decompressor = zlib.decompressobj(_GZIP_WBITS if coding == "gzip" else zlib.MAX_WBITS)

    @classmethod
    def for_response(cls, response: httpx.Response) -> CompressedEndCheck | None:
        """A check for ``response``, or ``None`` if its body is not one httpx decodes here."""
        codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if not codings or codings[-1] not in ("gzip", "deflate"):
            return None
        request = response.request
        return cls(codings[-1], f"{request.method} {request.url.path}")

    def feed(self, chunk: bytes) -> None:
        if not chunk or self._broken or self._decompressor.eof:
            return
        self.received += len(chunk)
        try:
            data = chunk
            while data and not self._decompressor.eof:
                # Bounded output per step: a small chunk of a highly compressed body never
                # expands in memory here (the decoded bytes are only counted, not kept).
                self._decompressor.decompress(data, _STEP_BYTES)
                data = self._decompressor.unconsumed_tail
        except zlib.error:
            if self.coding == "deflate" and self._first:
                # As httpx does: "deflate" is meant as zlib-wrapped, but is often raw deflate.
                self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
                self._first = False
                self.received -= len(chunk)
                self.feed(chunk)
                return
            self._broken = True  # not a compressed stream at all: httpx's decoder says so
        self._first = False

    def finish(self) -> None:
        """Raise ``PacklyIncompleteBodyError`` if bytes came but the compressed stream did not end."""
        if self.received == 0 or self._broken or self._decompressor.eof:
            return
        raise PacklyIncompleteBodyError(
            f"Packly's answer to {self.what} arrived incomplete: its {self.coding}-compressed body "
            f"({self.received:,} bytes) ended before the end of the compressed stream, so part of it "
            "was lost on the way (a proxy or the network cut it short). Nothing of it was used; retry later."
        )


class _CheckedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, check: CompressedEndCheck) -> None:
        self._inner = inner
        self._check = check

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._check.feed(chunk)
            yield chunk
        self._check.finish()

    def close(self) -> None:
        self._inner.close()


class _ACheckedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, check: CompressedEndCheck) -> None:
        self._inner = inner
        self._check = check

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._check.feed(chunk)
            yield chunk
        self._check.finish()

    async def aclose(self) -> None:
        await self._inner.aclose()


def check_compressed_end(response: httpx.Response) -> None:
    """``httpx.Client`` response event hook: wrap a compressed body's stream in the check."""
    check = CompressedEndCheck.for_response(response)
    if check is not None and isinstance(response.stream, httpx.SyncByteStream):
        response.stream = _CheckedStream(response.stream, check)


async def acheck_compressed_end(response: httpx.Response) -> None:
    """``httpx.AsyncClient`` response event hook: the same, for async streams."""
    check = CompressedEndCheck.for_response(response)
    if check is not None and isinstance(response.stream, httpx.AsyncByteStream):
        response.stream = _ACheckedStream(response.stream, check)
