"""The raw loopback test server itself (tests/loopback.py): what it records, what it sends,
and that leaving its ``with`` block leaves no thread behind, whatever the answer was doing."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from .loopback import (
    endless,
    http_response,
    loopback_server,
    reset,
    silence,
    token_answer,
    token_then,
    trickle,
)


def _server_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("loopback-server")]


def test_it_records_each_request_and_sends_exactly_the_bytes_given():
    answer = b"HTTP/1.1 201 Made\r\nContent-Length: 2\r\nX-Odd:  spaced \r\n\r\nok"
    with (
        loopback_server(lambda request: answer) as server,
        socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), timeout=5) as sock,
    ):
        sock.sendall(b"POST /v1/x?page=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Trace: a b\r\n\r\nhello")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received == answer
    [request] = server.requests
    assert (request.method, request.target, request.path, request.body) == ("POST", "/v1/x?page=2", "/v1/x", b"hello")
    assert request.headers["x-trace"] == "a b"
    assert server.calls == [("POST", "/v1/x")]
    assert _server_threads() == []


def test_http_response_frames_the_body_unless_told_otherwise():
    assert http_response(404, b"nope") == b"HTTP/1.1 404 X\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
    assert http_response(200, b"cut", content_length=10).startswith(b"HTTP/1.1 200 X\r\nContent-Length: 10\r\n")
    chunked = http_response(200, b"0\r\n\r\n", {"Transfer-Encoding": "chunked", "Connection": "keep-alive"})
    assert b"Content-Length" not in chunked and b"Connection: close" not in chunked


def test_token_then_routes_the_token_endpoint_and_everything_else():
    with (
        loopback_server(token_then(lambda request: http_response(200, request.path.encode()))) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        assert client.post("/v1/oauth2/token").json()["access_token"] == "loopback-test-token"
        assert client.get("/v1/reseller/orders?page=1").text == "/v1/reseller/orders"
    assert server.calls == [("POST", "/v1/oauth2/token"), ("GET", "/v1/reseller/orders")]


def test_a_body_cut_short_is_an_incomplete_body_for_the_client():
    with (
        loopback_server(lambda request: http_response(200, b"abc", content_length=10)) as server,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        httpx.get(server.base_url)


def test_a_trickled_answer_arrives_whole():
    answer = token_answer("trickled")
    with loopback_server(lambda request: trickle(answer, every=0.001, chunk=3, head_at_once=True)) as server:
        assert httpx.get(server.base_url).json()["access_token"] == "trickled"


def test_an_endless_body_and_a_silent_server_stop_with_the_server():
    with (
        loopback_server(token_then(endless(every=0.01), token=silence())) as server,
        httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(5, read=1.0)) as client,
    ):
        with client.stream("GET", "/v1/reseller/orders") as response:
            assert next(response.iter_raw()).startswith(b"[")
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/oauth2/token")
    assert _server_threads() == []  # neither the endless sender nor the silent one outlived the block


def test_a_reset_is_a_connection_reset_for_the_client_not_a_clean_close():
    with loopback_server(lambda request: reset()) as server, pytest.raises(httpx.ReadError, match="reset"):
        httpx.get(server.base_url)
