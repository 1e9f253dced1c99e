"""The sandbox app over ASGI (no sockets): tokens, errors, dieline, quotation, orders."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette

from airflow_provider_packly.sandbox import SandboxConfig, create_app
from tests.fakes import FakeClock
from tests.sandbox.helpers import assert_valid_pdf

pytestmark = pytest.mark.anyio

SANDBOX_AUTH = ("sandbox-client-id", "sandbox-client-secret")
LIVE_AUTH = ("live-client-id", "live-client-secret")
TOKEN_FORM = {"grant_type": "client_credentials", "scope": "external"}
BOX = {"article": "s020_v1", "material": "SBS300", "width": "100", "depth": "50", "height": "30"}
ITEM0 = (
    "items[0][article]=s020_v1&items[0][material]=SBS300&items[0][width]=100"
    "&items[0][depth]=50&items[0][height]=30&items[0][references][0][quantity]=500"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> Starlette:
    return create_app(SandboxConfig(now=clock))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as client:
        yield client


async def get_token(client: httpx.AsyncClient, auth: tuple[str, str] = SANDBOX_AUTH) -> str:
    response = await client.post("/v1/oauth2/token", auth=auth, data=TOKEN_FORM)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_envelope(
    response: httpx.Response,
    status: int,
    code: str,
    item: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Check the Packly error envelope; ``item`` is the expected (code, path) or None."""
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body: dict[str, Any] = response.json()
    assert body["request"]["uri"] == response.request.url.path
    assert body["request"]["method"] == response.request.method
    assert isinstance(body["request"]["query"], dict)
    assert body["response"]["code"] == code
    assert body["response"]["http_status_code"] == status
    assert body["response"]["message"]
    if item is None:
        assert "errors" not in body["response"]
    else:
        errors = body["response"]["errors"]
        assert len(errors) == 1
        assert (errors[0]["code"], errors[0]["path"]) == item
        assert errors[0]["message"]
    return body


# -- token -----------------------------------------------------------------------------------------
async def test_token_success(app: Starlette, client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/oauth2/token", auth=SANDBOX_AUTH, data=TOKEN_FORM)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {"token_type", "access_token", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    token = body["access_token"]
    assert token.startswith("AAAA%2F") and token.endswith("%3D")
    state = app.state.sandbox
    assert (state.token_requests, state.token_requests_ok) == (1, 1)
    assert state.issued_tokens == [token]
    assert await get_token(client) != token  # every request issues a fresh token


async def test_token_response_is_gzipped_only_when_asked(client: httpx.AsyncClient) -> None:
    request = client.build_request("POST", "/v1/oauth2/token", data=TOKEN_FORM, headers={"Accept-Encoding": "gzip"})
    request.headers["Authorization"] = httpx.BasicAuth(*SANDBOX_AUTH)._auth_header
    response = await client.send(request, stream=True)
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    assert response.headers["content-encoding"] == "gzip"
    assert raw[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(raw))["token_type"] == "bearer"

    plain = await client.post(
        "/v1/oauth2/token",
        auth=SANDBOX_AUTH,
        data=TOKEN_FORM,
        headers={"Accept-Encoding": "identity"},
    )
    assert "content-encoding" not in plain.headers
    assert plain.json()["expires_in"] == 3600
    refused = await client.post(
        "/v1/oauth2/token",
        auth=SANDBOX_AUTH,
        data=TOKEN_FORM,
        headers={"Accept-Encoding": "gzip;q=0"},
    )
    assert "content-encoding" not in refused.headers


async def test_token_type_and_lifetime_are_configurable() -> None:
    app = create_app(SandboxConfig(token_type="Bearer", token_lifetime=2))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        body = (await c.post("/v1/oauth2/token", auth=SANDBOX_AUTH, data=TOKEN_FORM)).json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 2)


@pytest.mark.parametrize(
    ("headers", "form", "status", "item"),
    [
        pytest.param({}, TOKEN_FORM, 401, None, id="no-authorization"),
        pytest.param({"Authorization": "Basic !!notbase64"}, TOKEN_FORM, 401, None, id="malformed"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            TOKEN_FORM,
            401,
            None,
            id="no-colon",
        ),
        pytest.param({"Authorization": "Bearer x"}, TOKEN_FORM, 401, None, id="wrong-scheme"),
        pytest.param(
            {"grant_type": "password", "scope": "external"},
            None,
            400,
            ("TKN_1000", "grant_type"),
            id="wrong-grant-type",
        ),
        pytest.param({"scope": "external"}, None, 400, ("TKN_1000", "grant_type"), id="no-grant-type"),
        pytest.param(
            {"grant_type": "client_credentials", "scope": "internal"},
            None,
            400,
            ("TKN_1001", "scope"),
            id="wrong-scope",
        ),
        pytest.param({"grant_type": "client_credentials"}, None, 400, ("TKN_1001", "scope"), id="no-scope"),
    ],
)
async def test_token_errors(
    app: Starlette,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    form: dict[str, str] | None,
    status: int,
    item: tuple[str, str] | None,
) -> None:
    if form is None:  # the parameter set is the form; authenticate correctly
        response = await client.post("/v1/oauth2/token", auth=SANDBOX_AUTH, data=headers)
    else:
        response = await client.post("/v1/oauth2/token", headers=headers, data=form)
    code = "UNAUTHORIZED" if status == 401 else "VALIDATION_ERROR"
    assert_envelope(response, status, code, item)
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")
    state = app.state.sandbox
    assert (state.token_requests, state.token_requests_ok, state.issued_tokens) == (1, 0, [])


@pytest.mark.parametrize("auth", [("sandbox-client-id", "wrong-secret"), ("someone-else", "sandbox-client-secret")])
async def test_token_wrong_credentials(client: httpx.AsyncClient, auth: tuple[str, str]) -> None:
    response = await client.post("/v1/oauth2/token", auth=auth, data=TOKEN_FORM)
    body = assert_envelope(response, 401, "UNAUTHORIZED")
    assert "environment" not in body["response"]["message"]
    assert "sandbox-client-secret" not in response.text


async def test_credentials_do_not_cross_environments(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/oauth2/token", auth=LIVE_AUTH, data=TOKEN_FORM)
    body = assert_envelope(response, 401, "UNAUTHORIZED")
    assert "live environment" in body["response"]["message"]
    assert "live-client-secret" not in response.text

    live_app = create_app(SandboxConfig(environment="live"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=live_app), base_url="http://t") as c:
        refused = await c.post("/v1/oauth2/token", auth=SANDBOX_AUTH, data=TOKEN_FORM)
        assert "sandbox environment" in refused.json()["response"]["message"]
        assert refused.status_code == 401
        assert await get_token(c, LIVE_AUTH)


# -- bearer tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer AAAA%2Funknown%3D"}, {"Authorization": "Basic abc"}],
    ids=["none", "unknown", "basic"],
)
async def test_api_requires_a_known_bearer_token(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get("/v1/reseller/orders", headers=headers)
    assert_envelope(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_token_must_be_sent_back_verbatim(client: httpx.AsyncClient) -> None:
    token = await get_token(client)
    assert (await client.get("/v1/reseller/orders", headers=bearer(token))).status_code == 200
    decoded = unquote(token)
    assert decoded != token
    assert (await client.get("/v1/reseller/orders", headers=bearer(decoded))).status_code == 401
    # The scheme is case-insensitive, the token is not.
    assert (await client.get("/v1/reseller/orders", headers={"Authorization": f"bearer {token}"})).status_code == 200


async def test_token_expires_on_the_config_clock(clock: FakeClock) -> None:
    app = create_app(SandboxConfig(token_lifetime=2, now=clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        token = await get_token(c)
        clock.advance(1.99)
        assert (await c.get("/v1/reseller/orders", headers=bearer(token))).status_code == 200
        clock.advance(0.01)
        expired = await c.get("/v1/reseller/orders", headers=bearer(token))
        body = assert_envelope(expired, 401, "UNAUTHORIZED")
        assert "expired" in body["response"]["message"]
        assert (await c.get("/v1/reseller/orders", headers=bearer(await get_token(c)))).status_code == 200


async def test_revoke_tokens(app: Starlette, client: httpx.AsyncClient) -> None:
    first, second = await get_token(client), await get_token(client)
    revoked = await client.post("/_sandbox/revoke-tokens")
    assert revoked.json() == {"revoked": 2}
    for token in (first, second):
        assert (await client.get("/v1/reseller/orders", headers=bearer(token))).status_code == 401
    third = await get_token(client)
    assert (await client.get("/v1/reseller/orders", headers=bearer(third))).status_code == 200
    assert app.state.sandbox.revoke_all_tokens() == 1
    assert (await client.get("/v1/reseller/orders", headers=bearer(third))).status_code == 401
    assert app.state.sandbox.issued_tokens == [first, second, third]


# -- dieline ---------------------------------------------------------------------------------------
async def test_dieline_pdf_is_valid_and_deterministic(client: httpx.AsyncClient) -> None:
    headers = bearer(await get_token(client))
    response = await client.get("/v1/reseller/dieline", params=BOX, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert "content-encoding" not in response.headers  # httpx asked for gzip; PDFs are not
    pdf = response.content
    assert_valid_pdf(pdf)
    assert 1_000 < len(pdf) < 20_000
    assert b"article s020_v1, material SBS300, 100 x 50 x 30 mm" in pdf
    again = await client.get("/v1/reseller/dieline", params={**BOX, "type": "pdf"}, headers=headers)
    assert again.content == pdf
    other = await client.get("/v1/reseller/dieline", params={**BOX, "width": "120.25"}, headers=headers)
    assert_valid_pdf(other.content)
    assert other.content != pdf
    assert b"120.25 x 50 x 30 mm" in other.content


async def test_dieline_json_is_the_same_pdf_in_base64(client: httpx.AsyncClient) -> None:
    headers = bearer(await get_token(client))
    pdf = (await client.get("/v1/reseller/dieline", params=BOX, headers=headers)).content
    response = await client.get("/v1/reseller/dieline", params={**BOX, "type": "json"}, headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["request"] == {
        "uri": "/v1/reseller/dieline",
        "method": "GET",
        "query": {**BOX, "type": "json"},
    }
    assert body["response"]["mime_type"] == "application/pdf"
    assert body["response"]["encoding"] == "base64"
    assert base64.b64decode(body["response"]["buffer"]) == pdf


async def test_dieline_padding_makes_large_valid_pdfs(clock: FakeClock) -> None:
    plain_app = create_app(SandboxConfig(now=clock))
    padded_app = create_app(SandboxConfig(now=clock, dieline_padding_bytes=1_000_003))
    sizes = []
    for app in (plain_app, padded_app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            response = await c.get("/v1/reseller/dieline", params=BOX, headers=bearer(await get_token(c)))
            assert_valid_pdf(response.content)
            assert int(response.headers["content-length"]) == len(response.content)
            sizes.append(len(response.content))
    # The padding, plus the extra digits of the larger startxref offset.
    assert 1_000_003 < sizes[1] - sizes[0] <= 1_000_003 + 7


@pytest.mark.parametrize(
    ("overrides", "item"),
    [
        ({"article": "S020_v1"}, ("DLN_1100", "article")),
        ({"article": None}, ("DLN_1100", "article")),
        ({"material": "CARDBOARD"}, ("DLN_1101", "material")),
        ({"material": None}, ("DLN_1101", "material")),
        ({"width": "100.123"}, ("DLN_1102", "width")),
        ({"width": "0"}, ("DLN_1102", "width")),
        ({"width": "2000.01"}, ("DLN_1102", "width")),
        ({"width": "1e2"}, ("DLN_1102", "width")),
        ({"depth": "-5"}, ("DLN_1103", "depth")),
        ({"depth": None}, ("DLN_1103", "depth")),
        ({"height": "abc"}, ("DLN_1104", "height")),
        ({"type": "png"}, ("DLN_1105", "type")),
        # Fail fast: only the first error, in the order article, material, dimensions, type.
        ({"article": "x", "material": "x", "width": "x", "type": "x"}, ("DLN_1100", "article")),
        ({"material": "x", "width": "x"}, ("DLN_1101", "material")),
        ({"depth": "x", "height": "x", "type": "x"}, ("DLN_1103", "depth")),
    ],
)
async def test_dieline_validation_errors(
    client: httpx.AsyncClient, overrides: dict[str, str | None], item: tuple[str, str]
) -> None:
    params = {k: v for k, v in {**BOX, **overrides}.items() if v is not None}
    response = await client.get("/v1/reseller/dieline", params=params, headers=bearer(await get_token(client)))
    body = assert_envelope(response, 400, "VALIDATION_ERROR", item)
    assert body["request"]["query"] == params


async def test_dieline_accepts_the_largest_dimensions(client: httpx.AsyncClient) -> None:
    params = {**BOX, "width": "2000", "depth": "0.01", "height": "1999.99"}
    response = await client.get("/v1/reseller/dieline", params=params, headers=bearer(await get_token(client)))
    assert response.status_code == 200
    assert_valid_pdf(response.content)


# -- quotation -------------------------------------------------------------------------------------
async def test_quotation_prices_deterministically(client: httpx.AsyncClient) -> None:
    headers = bearer(await get_token(client))
    query = ITEM0 + "&items[0][printing]=true&items[0][gold]=false&items[0][manufacturing_time]=express"
    response = await client.get(f"/v1/reseller/quotation?{query}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request"]["query"]["items[0][references][0][quantity]"] == "500"
    # blank (2*(100+50)+15) x (30+2*50+30) mm = 0.0504 m2 x 0.62 EUR x 1.25 (printing) x 1.3
    assert body["response"] == {
        "currency": "EUR",
        "shipping": "IT",
        "items": [
            {
                "article": "s020_v1",
                "material": "SBS300",
                "quantity": 500,
                "manufacturing_time": "express",
                "manufacturing_days": 2,
                "unit_price": 0.0508,
                "total_amount_tax_excluded": 25.4,
            }
        ],
        "total_amount_tax_excluded": 25.4,
        "tax_amount": 5.59,
        "total_amount_tax_included": 30.99,
    }
    again = await client.get(f"/v1/reseller/quotation?{query}", headers=headers)
    assert again.json() == body


async def test_quotation_with_two_items_and_shipping(client: httpx.AsyncClient) -> None:
    second = ITEM0.replace("items[0]", "items[1]").replace("SBS300", "KRAFT250").replace("=500", "=1000")
    query = f"shipping=DE&{second}&{ITEM0}&items[1][manufacturing_time]=economy"
    response = await client.get(f"/v1/reseller/quotation?{query}", headers=bearer(await get_token(client)))
    assert response.status_code == 200, response.text
    quotation = response.json()["response"]
    assert quotation["shipping"] == "DE"
    first_item, second_item = quotation["items"]
    assert (first_item["material"], first_item["quantity"], first_item["manufacturing_days"]) == (
        "SBS300",
        500,
        5,
    )
    assert (
        second_item["material"],
        second_item["quantity"],
        second_item["manufacturing_days"],
    ) == ("KRAFT250", 1000, 8)
    total = round(first_item["total_amount_tax_excluded"] + second_item["total_amount_tax_excluded"], 2)
    assert quotation["total_amount_tax_excluded"] == total
    assert quotation["tax_amount"] == round(total * 0.22, 2)
    assert quotation["total_amount_tax_included"] == round(total + quotation["tax_amount"], 2)


@pytest.mark.parametrize(
    ("query", "code", "item"),
    [
        ("", "VALIDATION_ERROR", ("QUO_1000", "items")),
        ("shipping=IT", "VALIDATION_ERROR", ("QUO_1000", "items")),
        ("items=s020_v1", "VALIDATION_ERROR", ("QUO_1000", "items")),
        (ITEM0.replace("items[0]", "items[1]"), "VALIDATION_ERROR", ("QUO_1000", "items")),
        (ITEM0 + "&items=1", "VALIDATION_ERROR", ("QUO_1000", "items")),
        (ITEM0.replace("s020_v1", "box"), "VALIDATION_ERROR", ("DLN_1100", "items[0].article")),
        (
            ITEM0 + "&" + ITEM0.replace("items[0]", "items[1]").replace("SBS300", "GOLD"),
            "VALIDATION_ERROR",
            ("DLN_1101", "items[1].material"),
        ),
        (
            ITEM0.replace("width]=100", "width]=1.001"),
            "VALIDATION_ERROR",
            ("DLN_1102", "items[0].width"),
        ),
        (
            ITEM0.replace("height]=30", "height]=0"),
            "VALIDATION_ERROR",
            ("DLN_1104", "items[0].height"),
        ),
        (
            ITEM0.replace("quantity]=500", "quantity]=0"),
            "QUANTITY_ERROR",
            ("QTY_1000", "items[0].references[0].quantity"),
        ),
        (
            ITEM0.replace("quantity]=500", "quantity]=2.5"),
            "QUANTITY_ERROR",
            ("QTY_1000", "items[0].references[0].quantity"),
        ),
        (
            ITEM0 + "&items[0][references][1][quantity]=10",
            "VALIDATION_ERROR",
            ("QUO_1001", "items[0].references"),
        ),
        (
            ITEM0.replace("&items[0][references][0][quantity]=500", ""),
            "VALIDATION_ERROR",
            ("QUO_1001", "items[0].references"),
        ),
        (ITEM0 + "&items[0][varnish]=yes", "VALIDATION_ERROR", ("QUO_1002", "items[0].varnish")),
        (ITEM0 + "&items[0][printing]=True", "VALIDATION_ERROR", ("QUO_1002", "items[0].printing")),
        (
            ITEM0 + "&items[0][manufacturing_time]=slow",
            "VALIDATION_ERROR",
            ("QUO_1003", "items[0].manufacturing_time"),
        ),
        (ITEM0 + "&shipping=it", "VALIDATION_ERROR", ("QUO_1004", "shipping")),
        (ITEM0 + "&shipping=ITA", "VALIDATION_ERROR", ("QUO_1004", "shipping")),
    ],
)
async def test_quotation_errors(client: httpx.AsyncClient, query: str, code: str, item: tuple[str, str]) -> None:
    response = await client.get(f"/v1/reseller/quotation?{query}", headers=bearer(await get_token(client)))
    assert_envelope(response, 400, code, item)


async def test_quotation_booleans_accept_one_and_zero(client: httpx.AsyncClient) -> None:
    headers = bearer(await get_token(client))

    async def unit_price(extra: str) -> float:
        response = await client.get(f"/v1/reseller/quotation?{ITEM0}{extra}", headers=headers)
        assert response.status_code == 200, response.text
        price: float = response.json()["response"]["items"][0]["unit_price"]
        return price

    base = await unit_price("")
    assert await unit_price("&items[0][printing]=0") == base
    assert await unit_price("&items[0][printing]=false") == base
    assert await unit_price("&items[0][printing]=1") == await unit_price("&items[0][printing]=true") > base


# -- orders ----------------------------------------------------------------------------------------
async def all_orders(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/reseller/orders", params={"limit": 100, "sort": "asc"}, headers=headers)
    assert response.status_code == 200
    return {order["id"]: order for order in response.json()["response"]}


async def test_orders_paging_and_sorting(client: httpx.AsyncClient) -> None:
    headers = bearer(await get_token(client))
    first = await client.get("/v1/reseller/orders", headers=headers)
    body = first.json()
    assert body["request"] == {"uri": "/v1/reseller/orders", "method": "GET", "query": {}}
    page0 = body["response"]
    assert len(page0) == 10
    assert [o["id"] for o in page0[:2]] == ["ORD-0025", "ORD-0024"]  # default: desc
    ids: list[str] = []
    for page in range(3):
        response = await client.get(
            "/v1/reseller/orders",
            params={"page": page, "limit": 10, "sort": "asc"},
            headers=headers,
        )
        ids += [o["id"] for o in response.json()["response"]]
    assert ids == [f"ORD-{n:04d}" for n in range(1, 26)]
    past_end = await client.get("/v1/reseller/orders", params={"page": 3, "limit": 10}, headers=headers)
    assert past_end.status_code == 200
    assert past_end.json()["response"] == []
    for spelling, expected in (
        ("ascending", "ORD-0001"),
        ("descending", "ORD-0025"),
        ("desc", "ORD-0025"),
    ):
        response = await client.get("/v1/reseller/orders", params={"sort": spelling, "limit": 1}, headers=headers)
        assert [o["id"] for o in response.json()["response"]] == [expected]
    created = [o["created_at"] for o in (await all_orders(client, headers)).values()]
    assert created == sorted(created)


async def test_order_shape(client: httpx.AsyncClient) -> None:
    orders = await all_orders(client, bearer(await get_token(client)))
    order = orders["ORD-0001"]
    assert order["purchase_order"] == "PO-2026-0001"
    assert order["created_at"].endswith("Z")
    assert round(order["total_amount_tax_excluded"] + order["tax_amount"], 2) == order["total_amount_tax_included"]
    assert order["tax_amount"] == round(order["total_amount_tax_excluded"] * 0.22, 2)
    for order in orders.values():
        assert 1 <= len(order["items"]) <= 3
        assert all(p["id"].startswith(order["id"].replace("ORD", "PRD") + "-") for p in order["items"])


@pytest.mark.parametrize(
    ("params", "item"),
    [
        ({"page": "-1"}, ("ORD_1100", "page")),
        ({"page": "x"}, ("ORD_1100", "page")),
        ({"limit": "0"}, ("ORD_1101", "limit")),
        ({"limit": "101"}, ("ORD_1101", "limit")),
        ({"limit": ""}, ("ORD_1101", "limit")),
        ({"sort": "up"}, ("ORD_1102", "sort")),
    ],
)
async def test_orders_validation_errors(
    client: httpx.AsyncClient, params: dict[str, str], item: tuple[str, str]
) -> None:
    response = await client.get("/v1/reseller/orders", params=params, headers=bearer(await get_token(client)))
    body = assert_envelope(response, 400, "VALIDATION_ERROR", item)
    assert body["request"]["query"] == params


async def test_orders_advance_on_the_config_clock(client: httpx.AsyncClient, clock: FakeClock) -> None:
    token = await get_token(client)
    headers = bearer(token)
    step = 2.0  # the default order_step_seconds

    async def status(order_id: str) -> tuple[str, set[str]]:
        order = (await all_orders(client, headers))[order_id]
        return order["status"], {p["status"] for p in order["items"]}

    expected_ord1 = [
        (0.0, "waiting_execute_payment", "waiting_execute_payment"),
        (1.0, "pending_payment", "pending"),
        (2.0, "paid", "waiting_upload_confirmation"),
        (3.0, "in_processing", "waiting_file_check"),
        (3.5, "in_processing", "in_processing"),
        (4.0, "closed", "shipped"),
        (50.0, "closed", "shipped"),
    ]
    start = clock.now
    for steps, order_status, product_status in expected_ord1:
        clock.now = start + steps * step
        assert await status("ORD-0001") == (order_status, {product_status}), steps
    clock.now = start + 1.999 * step
    assert await status("ORD-0001") == ("pending_payment", {"pending"})

    clock.now = start
    assert await status("ORD-0002") == ("deleted", {"deleted"})
    assert await status("ORD-0007") == ("waiting_execute_payment", {"waiting_execute_payment"})
    clock.now = start + 2 * step
    assert await status("ORD-0007") == ("canceled", {"canceled"})
    clock.now = start + 100 * step
    orders = await all_orders(client, headers)
    assert orders["ORD-0002"]["status"] == "deleted"
    assert {orders[f"ORD-{n:04d}"]["status"] for n in (7, 14, 21)} == {"canceled"}
    others = {o["status"] for oid, o in orders.items() if oid not in ("ORD-0002", "ORD-0007", "ORD-0014", "ORD-0021")}
    assert others == {"closed"}

    reset = await client.post("/_sandbox/reset-clock")
    assert reset.status_code == 200
    assert await status("ORD-0001") == ("waiting_execute_payment", {"waiting_execute_payment"})


async def test_orders_are_staggered(client: httpx.AsyncClient, clock: FakeClock) -> None:
    headers = bearer(await get_token(client))
    start = clock.now
    for steps in (0, 2, 5, 9):
        clock.now = start + steps * 2.0
        statuses = {o["status"] for o in (await all_orders(client, headers)).values()}
        assert len(statuses - {"deleted", "canceled"}) >= 2, (steps, statuses)
        assert statuses & {"pending_payment", "paid", "in_processing"}, (steps, statuses)


# -- routing, stats, counters ----------------------------------------------------------------------
async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    headers = bearer(await get_token(client))
    assert_envelope(await client.get("/v1/reseller/nothing", headers=headers), 404, "NOT_FOUND")
    assert_envelope(await client.get("/v1/reseller/orders/", headers=headers), 404, "NOT_FOUND")
    wrong = await client.post("/v1/reseller/orders", headers=headers)
    assert_envelope(wrong, 405, "METHOD_NOT_ALLOWED")
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert_envelope(await client.get("/v1/oauth2/token"), 405, "METHOD_NOT_ALLOWED")


async def test_stats_count_requests_and_never_show_tokens(app: Starlette, client: httpx.AsyncClient) -> None:
    token = await get_token(client)
    await client.post("/v1/oauth2/token", auth=("x", "y"), data=TOKEN_FORM)
    await client.get("/v1/reseller/orders", headers=bearer(token))
    await client.get("/v1/reseller/orders")
    await client.get("/v1/reseller/dieline", params=BOX, headers=bearer(token))
    await client.get("/v1/oauth2/token")  # not a POST: not a token request
    response = await client.get("/_sandbox/stats")
    stats = response.json()
    assert stats["token_requests"] == 2
    assert stats["token_requests_ok"] == 1
    assert stats["issued_tokens"] == 1
    assert stats["valid_tokens"] == 1
    assert stats["api_requests"] == {"/v1/reseller/orders": 2, "/v1/reseller/dieline": 1}
    assert token not in response.text and "sandbox-client-secret" not in response.text
    state = app.state.sandbox
    assert state.api_requests["/v1/reseller/orders"] == 2
    assert state.token_requests == 2


async def test_unexpected_errors_become_internal_server_error_envelopes(
    app: Starlette, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await get_token(client)

    def broken(*args: object, **kwargs: object) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr("airflow_provider_packly.sandbox.app.build_order", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as raw:
        response = await raw.get("/v1/reseller/orders", headers=bearer(token))
    body = assert_envelope(response, 500, "INTERNAL_SERVER_ERROR")
    assert "boom" not in response.text
    assert body["request"]["uri"] == "/v1/reseller/orders"


async def test_order_timelines_start_when_first_listed_not_when_the_sandbox_started(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    # Issue 8 item 7: a sandbox up for an hour must still show ORD-0001 open to the first DAG
    # that looks, so the order example defers under a real scheduler.
    clock.advance(3600)
    headers = bearer(await get_token(client))
    orders = await all_orders(client, headers)
    assert orders["ORD-0001"]["status"] == "waiting_execute_payment"
    assert orders["ORD-0017"]["status"] == "closed"  # its time-zero state
    clock.advance(2 * 2.0)
    assert (await all_orders(client, headers))["ORD-0001"]["status"] == "paid"
    clock.advance(2 * 2.0)
    assert (await all_orders(client, headers))["ORD-0001"]["status"] == "closed"
    stats = (await client.get("/_sandbox/stats")).json()
    assert stats["orders_started"] == 25
    # A reset starts every order again at its next listing, however much later that is.
    assert (await client.post("/_sandbox/reset-clock")).status_code == 200
    clock.advance(600)
    assert (await all_orders(client, headers))["ORD-0001"]["status"] == "waiting_execute_payment"


async def test_each_order_starts_when_its_own_page_is_first_listed(client: httpx.AsyncClient, clock: FakeClock) -> None:
    headers = bearer(await get_token(client))
    ascending = {"sort": "asc", "limit": "5"}
    first = (await client.get("/v1/reseller/orders", params=ascending, headers=headers)).json()
    assert first["response"][0] == {**first["response"][0], "id": "ORD-0001"}
    clock.advance(3 * 2.0)
    later = await all_orders(client, headers)
    assert later["ORD-0001"]["status"] == "in_processing"  # started 3 steps ago
    assert later["ORD-0007"]["status"] == "waiting_execute_payment"  # first listed just now
