"""The opt-in shared AsyncClient: one pool per event loop and connection, closed with the loop."""

from __future__ import annotations

import asyncio

import httpx

from airflow_provider_packly.hooks.packly import PacklyHook


def ok(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/oauth2/token":
        return httpx.Response(200, json={"token_type": "bearer", "access_token": "tok", "expires_in": 3600})
    return httpx.Response(200, json={"response": []})


def test_hooks_that_opt_in_share_one_client_per_loop_and_it_closes_with_the_loop(make_connection):
    transport = httpx.MockTransport(ok)
    seen: list[httpx.AsyncClient] = []

    async def main() -> None:
        for _ in range(3):
            async with PacklyHook(
                connection=make_connection(), async_transport=transport, shared_async_client=True
            ) as hook:
                await hook.arequest("GET", "/v1/reseller/orders")
                seen.append(await hook.aget_client())
        assert not seen[0].is_closed  # leaving a hook's block leaves the shared client open
        other = PacklyHook(connection=make_connection(timeout=5), async_transport=transport, shared_async_client=True)
        assert await other.aget_client() is not seen[0]  # other settings, other client

    asyncio.run(main())
    assert seen[0] is seen[1] is seen[2]
    assert seen[0].is_closed  # asyncio.run shut the loop's async generators down


def test_a_new_loop_gets_a_new_shared_client(make_connection):
    transport = httpx.MockTransport(ok)

    async def client() -> httpx.AsyncClient:
        hook = PacklyHook(connection=make_connection(), async_transport=transport, shared_async_client=True)
        return await hook.aget_client()

    first, second = asyncio.run(client()), asyncio.run(client())
    assert first is not second and first.is_closed and second.is_closed


def test_shared_clients_can_be_closed_explicitly(make_connection):
    async def main() -> httpx.AsyncClient:
        hook = PacklyHook(
            connection=make_connection(), async_transport=httpx.MockTransport(ok), shared_async_client=True
        )
        client = await hook.aget_client()
        await PacklyHook.aclose_shared_clients()
        assert client.is_closed
        assert await hook.aget_client() is not client  # a later call opens a new one
        return client

    asyncio.run(main())


def test_hooks_without_the_option_keep_their_own_client(make_connection):
    async def main() -> None:
        transport = httpx.MockTransport(ok)
        async with (
            PacklyHook(connection=make_connection(), async_transport=transport) as a,
            PacklyHook(connection=make_connection(), async_transport=transport) as b,
        ):
            assert await a.aget_client() is not await b.aget_client()

    asyncio.run(main())
