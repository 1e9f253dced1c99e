"""What every client of the provider does alike, sync and async."""

from __future__ import annotations

import asyncio

import httpx

from tests.fakes import ORDERS_PATH, FakePackly

SET_COOKIE = httpx.Response(200, json={"response": []}, headers={"Set-Cookie": "session=abc123; Path=/"})


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
