"""A compressed body cut short is an error, never a success (issue 9, item 8).

A proxy that lost the tail of a gzip answer may re-frame what it has with a matching
``Content-Length``: the HTTP framing is then complete and only the gzip trailer (CRC and
length) tells the body is not. httpx does not check it; the provider does, on every path.
"""

from __future__ import annotations

import gzip
import random
import zlib

import httpx
import pytest

from airflow_provider_packly.exceptions import PacklyError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.operators.packly import PacklyDielineOperator

from ..fakes import FakePackly, sandbox_connection_json
from ..loopback import gzip_answer, loopback_server, token_answer, token_then

TOKEN = "raw-token-AAAA%2FAAA%3D"
#: A dieline-sized PDF (about 260 KB) that does not compress to nothing.
PDF = b"%PDF-1.4\n" + random.Random(8).randbytes(260_000) + b"\n%%EOF\n"
BOX = {"article": "s020_v1", "material": "SBS300", "width": 120, "depth": 80, "height": 40}
INCOMPLETE = "arrived incomplete"


def _packly(dieline: bytes):
    return token_then(dieline, token=token_answer(TOKEN))


def _connection(make_connection, base_url: str, **overrides):
    return make_connection(base_url=base_url, retry_max_attempts=1, **overrides)


def _assert_incomplete(error: BaseException) -> None:
    assert isinstance(error, PacklyTransportError)
    assert type(error).__name__ == "PacklyIncompleteBodyError"
    assert INCOMPLETE in str(error) and "gzip" in str(error)


def test_truncated_gzip_with_a_matching_length_fails_get_dieline(make_connection):
    with (
        loopback_server(_packly(gzip_answer(PDF, keep=0.95))) as server,
        PacklyHook(connection=_connection(make_connection, server.base_url)) as hook,
        pytest.raises(PacklyError) as caught,
    ):
        hook.get_dieline(**BOX)
    _assert_incomplete(caught.value)


@pytest.mark.anyio
async def test_truncated_gzip_fails_aget_dieline(make_connection):
    with loopback_server(_packly(gzip_answer(PDF, keep=0.95))) as server:
        async with PacklyHook(connection=_connection(make_connection, server.base_url)) as hook:
            with pytest.raises(PacklyError) as caught:
                await hook.aget_dieline(**BOX)
    _assert_incomplete(caught.value)


@pytest.mark.anyio
async def test_a_small_truncated_gzip_answer_fails_arequest(make_connection):
    """A body small enough to come with its headers is read from memory: still checked."""
    cut = gzip_answer(b'{"request": {}, "response": []}', keep=0.9, content_type="application/json")
    with loopback_server(_packly(cut)) as server:
        async with PacklyHook(connection=_connection(make_connection, server.base_url)) as hook:
            with pytest.raises(PacklyError) as caught:
                await hook.arequest("GET", "/v1/reseller/orders")
    _assert_incomplete(caught.value)


@pytest.mark.anyio
async def test_a_small_complete_gzip_answer_is_decoded_once_by_arequest(make_connection):
    body = b'{"request": {}, "response": []}'
    with loopback_server(_packly(gzip_answer(body, content_type="application/json"))) as server:
        async with PacklyHook(connection=_connection(make_connection, server.base_url)) as hook:
            assert (await hook.arequest("GET", "/v1/reseller/orders")).content == body


def test_truncated_gzip_fails_inside_stream(make_connection):
    received = b""
    with (
        loopback_server(_packly(gzip_answer(PDF, keep=0.95))) as server,
        PacklyHook(connection=_connection(make_connection, server.base_url)) as hook,
        pytest.raises(PacklyError) as caught,
        hook.stream("GET", "/v1/reseller/dieline", params=BOX) as response,
    ):
        for chunk in response.iter_bytes():
            received += chunk
    _assert_incomplete(caught.value)
    assert 0 < len(received) < len(PDF)  # the error came at the end, instead of a short success


@pytest.mark.anyio
async def test_truncated_gzip_fails_inside_astream(make_connection):
    with loopback_server(_packly(gzip_answer(PDF, keep=0.95))) as server:
        async with PacklyHook(connection=_connection(make_connection, server.base_url)) as hook:
            with pytest.raises(PacklyError) as caught:
                async with hook.astream("GET", "/v1/reseller/dieline", params=BOX) as response:
                    async for _ in response.aiter_bytes():
                        pass
    _assert_incomplete(caught.value)


def test_a_complete_gzip_body_is_returned_whole(make_connection):
    with (
        loopback_server(_packly(gzip_answer(PDF))) as server,
        PacklyHook(connection=_connection(make_connection, server.base_url)) as hook,
    ):
        assert hook.get_dieline(**BOX) == PDF


def test_a_truncated_gzip_get_is_retried(make_connection):
    answers = [gzip_answer(PDF, keep=0.5), gzip_answer(PDF)]

    with loopback_server(token_then(lambda request: answers.pop(0), token=token_answer(TOKEN))) as server:
        connection = make_connection(base_url=server.base_url, retry_max_attempts=2, retry_backoff_seconds=0)
        with PacklyHook(connection=connection) as hook:
            assert hook.get_dieline(**BOX) == PDF
    assert [path for _, path in server.calls].count("/v1/reseller/dieline") == 2


def test_the_dieline_operator_keeps_no_file_from_a_truncated_gzip(make_connection, monkeypatch, tmp_path):
    target = tmp_path / "box.pdf"
    with loopback_server(_packly(gzip_answer(PDF, keep=0.95))) as server:
        monkeypatch.setenv("AIRFLOW_CONN_PACKLY_DEFAULT", sandbox_connection_json(server.base_url))
        with pytest.raises(PacklyError) as caught:
            PacklyDielineOperator(task_id="d", **BOX, output_path=str(target)).execute({})
    _assert_incomplete(caught.value)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a partial file


def test_the_dieline_operator_keeps_an_earlier_file_untouched(monkeypatch, tmp_path):
    target = tmp_path / "box.pdf"
    target.write_bytes(b"%PDF- the previous good file")
    with loopback_server(_packly(gzip_answer(PDF, keep=0.95))) as server:
        monkeypatch.setenv("AIRFLOW_CONN_PACKLY_DEFAULT", sandbox_connection_json(server.base_url))
        with pytest.raises(PacklyError):
            PacklyDielineOperator(task_id="d", **BOX, output_path=str(target)).execute({})
    assert [p.name for p in tmp_path.iterdir()] == ["box.pdf"]
    assert target.read_bytes() == b"%PDF- the previous good file"


# -- the other encodings httpx decodes, and bodies that are fine (MockTransport) ----------------------


class Unread(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that arrives as a network body does: read when the client reads it.

    (``httpx.Response(content=...)`` is decoded at once, before any client sees it.)
    """

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self):
        yield from (self.body[i : i + 4096] for i in range(0, len(self.body), 4096))

    async def __aiter__(self):
        for chunk in self:
            yield chunk


def answer(status: int, body: bytes, **headers: str):
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return lambda request: httpx.Response(status, stream=Unread(body), headers=named)


def _deflate(data: bytes, *, raw: bool) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(PDF, mtime=0)),
        ("deflate", _deflate(PDF, raw=False)),
        ("deflate", _deflate(PDF, raw=True)),
        ("identity, gzip", gzip.compress(PDF, mtime=0)),
    ],
)
@pytest.mark.parametrize("complete", [True, False])
def test_every_decoded_encoding_is_checked(encoding: str, body: bytes, complete: bool):
    sent = body if complete else body[: len(body) - 40]
    packly = FakePackly(answer(200, sent, content_encoding=encoding))
    with packly.hook() as hook:
        if complete:
            assert hook.request("GET", "/v1/reseller/dieline").content == PDF
        else:
            with pytest.raises(PacklyError) as caught:
                hook.request("GET", "/v1/reseller/dieline")
            assert isinstance(caught.value, PacklyTransportError) and INCOMPLETE in str(caught.value)


def test_a_gzip_json_answer_cut_after_its_data_but_before_its_trailer_fails():
    """The worst case: every byte of the JSON decodes, only the CRC and length are missing."""
    body = gzip.compress(b'{"request": {}, "response": []}', mtime=0)[:-8]
    packly = FakePackly(answer(200, body, content_encoding="gzip"))
    with packly.hook() as hook, pytest.raises(PacklyError, match=INCOMPLETE):
        list(hook.iter_orders())


def test_empty_and_plain_bodies_are_not_checked():
    packly = FakePackly(
        lambda request: httpx.Response(204, headers={"content-encoding": "gzip"}),
        lambda request: httpx.Response(200, content=PDF, headers={"content-type": "application/pdf"}),
    )
    with packly.hook() as hook:
        assert hook.request("DELETE", "/v1/x").content == b""
        assert hook.request("GET", "/v1/reseller/dieline").content == PDF


def test_an_error_answer_cut_short_is_still_a_typed_error():
    body = gzip.compress(b'{"response": {"code": "INTERNAL_SERVER_ERROR", "message": "boom"}}', mtime=0)[:-10]
    packly = FakePackly(answer(500, body, content_encoding="gzip"))
    with packly.hook() as hook, pytest.raises(PacklyError):
        hook.request("GET", "/v1/reseller/orders")


def test_raw_server_sends_exactly_what_it_is_given():
    """The fixture itself: a truncated gzip really arrives with a matching Content-Length."""
    answer = gzip_answer(PDF, keep=0.5)
    with (
        loopback_server(lambda request: answer) as server,
        httpx.Client() as client,
        client.stream("GET", server.base_url + "/x") as response,
    ):
        raw = b"".join(response.iter_raw())
    assert int(response.headers["content-length"]) == len(raw) == len(gzip.compress(PDF, mtime=0)) // 2


def test_the_check_itself_never_holds_a_decompressed_body_in_memory():
    import tracemalloc

    from airflow_provider_packly.compressed import CompressedEndCheck

    bomb = gzip.compress(bytes(50_000_000), mtime=0)  # 50 MB of zeros in about 50 KB
    check = CompressedEndCheck("gzip", "GET /v1/x")
    tracemalloc.start()
    try:
        check.feed(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check.finish()  # complete: no error
    assert peak < 1_000_000
