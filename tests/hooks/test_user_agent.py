"""Every request, token requests included, names the provider, Airflow and Python versions."""

from __future__ import annotations

import asyncio
import platform
import re

import httpx

import airflow_provider_packly
from airflow_provider_packly._http import user_agent
from airflow_provider_packly.hooks.packly import PacklyHook

EXPECTED = re.compile(r"airflow-provider-packly/(\S+) \(Airflow/(\S+); Python/(\S+)\)")


class Recorder:
    """Token and API answers; remembers each request's path and User-Agent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.path, request.headers.get("user-agent")))
        if request.url.path == "/v1/oauth2/token":
            return httpx.Response(200, json={"token_type": "bearer", "access_token": "tok", "expires_in": 3600})
        return httpx.Response(200, json={"response": []})


def test_the_user_agent_names_the_three_versions():
    import airflow

    match = EXPECTED.fullmatch(user_agent())
    assert match is not None, user_agent()
    assert match.groups() == (airflow_provider_packly.__version__, airflow.__version__, platform.python_version())


def test_token_and_api_requests_carry_it_sync_and_async(make_connection):
    recorder = Recorder()
    transport = httpx.MockTransport(recorder)
    with PacklyHook(connection=make_connection(), transport=transport) as hook:
        hook.request("GET", "/v1/reseller/orders")

    async def main() -> None:
        async with PacklyHook(connection=make_connection(client_id="other"), async_transport=transport) as hook:
            await hook.arequest("GET", "/v1/reseller/orders")

    asyncio.run(main())
    paths = [path for path, _ in recorder.seen]
    assert paths == ["/v1/oauth2/token", "/v1/reseller/orders"] * 2
    assert {agent for _, agent in recorder.seen} == {user_agent()}
