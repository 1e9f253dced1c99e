"""What every client of the provider does alike, sync and async."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from airflow_provider_packly._http.clients import proxy_for
from tests.fakes import ORDERS_PATH, FakePackly, fake_connection


def test_no_cookie_is_kept_or_sent_back_sync_or_async() -> None:
    """Packly documents no cookies: one set by a response never rides along on later calls."""
    cookies: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        cookies.append(request.headers.get("cookie"))
        return httpx.Response(200, json={"response": []}, headers={"Set-Cookie": "session=abc123; Path=/"})

    fake = FakePackly(answer)
    hook = fake.hook()
    hook.request("GET", ORDERS_PATH)
    hook.request("GET", ORDERS_PATH)

    async def twice() -> None:
        await hook.arequest("GET", ORDERS_PATH)
        await hook.arequest("GET", ORDERS_PATH)
        await hook.aclose()

    asyncio.run(twice())
    assert cookies == [None, None, None, None]
    assert len(hook.get_client().cookies) == 0


@pytest.mark.parametrize(
    ("base_url", "environment", "expected"),
    [
        ("https://api.packly.example", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://api.packly.example", {"HTTP_PROXY": "http://p:3128"}, None),
        ("http://127.0.0.1:8089", {"HTTP_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://api.packly.example", {"ALL_PROXY": "http://all:1"}, "http://all:1"),
        ("https://api.packly.example", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "packly.example"}, None),
        ("https://api.packly.example", {"https_proxy": "http://p:3128", "no_proxy": "*"}, None),
        ("https://api.packly.example", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other.example"}, "http://p:3128"),
        ("http://127.0.0.1:8089", {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.1"}, None),
        ("https://api.packly.example", {}, None),
    ],
)
def test_the_environment_s_proxy_is_decided_once_per_connection(
    base_url: str, environment: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(fake_connection(base_url=base_url)) == expected
    # The connection's own proxy replaces whatever the environment says.
    assert proxy_for(fake_connection(base_url=base_url, proxy_url="http://mine:8080")) == "http://mine:8080"


def test_a_transport_of_your_own_gets_every_call_even_with_a_connection_proxy() -> None:
    """``transport=``/``async_transport=`` replace the whole network layer (docs/transports.md):
    the connection's proxy is the default transports' setting, not a detour around yours."""
    fake = FakePackly()
    hook = fake.hook(proxy_url="http://127.0.0.1:9")  # nothing listens there: a detour would fail
    hook.request("GET", ORDERS_PATH)

    async def once() -> None:
        await hook.arequest("GET", ORDERS_PATH)
        await hook.aclose()

    asyncio.run(once())
    assert fake.calls == [("GET", ORDERS_PATH, {}), ("GET", ORDERS_PATH, {})]
    assert fake.token_requests == 1
