"""The async resource methods over loopback against the sandbox: each answers as its sync twin.

The README promises "the same, async: aget_x" for ``aget_dieline`` and ``aget_quotation``
(a ``@task`` written as a coroutine, or a custom trigger, calls them); these are their tests.
"""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import run_sandbox

pytestmark = pytest.mark.integration

BOX = {"article": "s020_v1", "material": "SBS300", "width": 100, "depth": 50, "height": 30}
ITEMS = [{**BOX, "quantity": 500}]


@pytest.fixture(scope="module")
def settings():
    with run_sandbox() as sandbox:
        yield PacklyConnection(
            client_id="sandbox-client-id", client_secret="sandbox-client-secret", base_url=sandbox.base_url
        )


def test_aget_dieline_gives_what_get_dieline_gives(settings):
    with PacklyHook(connection=settings) as hook:
        pdf, document = hook.get_dieline(**BOX), hook.get_dieline(**BOX, type="json")

    async def main() -> tuple[bytes, dict]:
        async with PacklyHook(connection=settings) as hook:
            return await hook.aget_dieline(**BOX), await hook.aget_dieline(**BOX, type="json")

    apdf, adocument = asyncio.run(main())
    assert pdf.startswith(b"%PDF") and apdf == pdf
    assert adocument == document and adocument["pdf"] == pdf


def test_aget_quotation_gives_what_get_quotation_gives(settings):
    with PacklyHook(connection=settings) as hook:
        quote = hook.get_quotation(ITEMS, shipping="IT")

    async def main() -> object:
        async with PacklyHook(connection=settings) as hook:
            return await hook.aget_quotation(ITEMS, shipping="IT")

    assert quote and asyncio.run(main()) == quote
