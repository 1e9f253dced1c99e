"""``build_request``: what ``client.build_request`` would send, without its per-call cost."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_packly._http.messages import build_request
from airflow_provider_packly.resources import PacklyValidationError

BASES = ["https://api.packly.example", "http://127.0.0.1:8089/", "https://gw.example/packly/v0", "https://h.example/a/"]
CALLS: list[tuple[str, Any]] = [
    ("/v1/reseller/orders", None),
    ("/v1/reseller/orders", {"page": 2, "limit": 50}),
    ("/v1/reseller/orders?page=1", None),
    ("/v1/reseller/quotations", [("size", "10x10x10"), ("size", "20x20x20"), ("qty", 100)]),
    ("/v1/reseller/quotations", {"material": ["kraft", "white"], "rush": True, "note": None}),
    ("/v1/dielines/DL%2F1", {"type": "pdf", "q": "a b&c=d"}),
    ("/", {}),
]


@pytest.mark.parametrize("base_url", BASES)
@pytest.mark.parametrize(("path", "params"), CALLS)
def test_the_request_is_the_one_httpx_s_client_would_build(base_url: str, path: str, params: Any) -> None:
    client = httpx.Client(base_url=base_url, headers={"Accept": "application/json", "User-Agent": "t/1"})
    expected = client.build_request("GET", path, params=params, headers={"X-Trace": "7"})
    for _ in range(2):  # the second time from the cache of parsed URLs
        built = build_request(client, "GET", path, params=params, headers={"X-Trace": "7"})
        assert built.url == expected.url
        assert built.headers.multi_items() == expected.headers.multi_items()


def test_a_query_in_the_endpoint_is_kept_beside_params() -> None:
    """Where httpx's client drops the endpoint's own query when ``params`` are given, the
    provider merges them (a value given in both: the one in ``params``): nothing is lost."""
    client = httpx.Client(base_url="https://api.packly.example")
    built = build_request(client, "GET", "/v1/reseller/orders?page=1&status=paid", params={"page": 3, "limit": 50})
    assert dict(built.url.params) == {"page": "3", "status": "paid", "limit": "50"}


def test_a_body_and_its_headers_are_the_client_s_too() -> None:
    client = httpx.Client(base_url="https://api.packly.example", headers={"Accept": "application/json"})
    for options in ({"json": {"a": [1, 2]}}, {"data": {"grant_type": "client_credentials"}}):
        expected = client.build_request("POST", "/v1/x", **options)
        built = build_request(client, "POST", "/v1/x", **options)
        assert built.read() == expected.read()
        assert built.headers.multi_items() == expected.headers.multi_items()


def test_a_mutable_query_value_is_not_cached_but_still_sent() -> None:
    client = httpx.Client(base_url="https://api.packly.example")
    values = ["kraft"]
    first = build_request(client, "GET", "/v1/m", params={"material": values})
    values.append("white")
    second = build_request(client, "GET", "/v1/m", params={"material": values})
    assert first.url.params.get_list("material") == ["kraft"]
    assert second.url.params.get_list("material") == ["kraft", "white"]


def test_what_httpx_cannot_send_is_a_validation_error_without_the_value() -> None:
    client = httpx.Client(base_url="https://api.packly.example")
    with pytest.raises(PacklyValidationError, match="not a URL path") as caught:
        build_request(client, "GET", "/v1/orders\r\nX: y")
    assert caught.value.__context__ is None
    for value in ("s\u00e9cret-value", "secret\x0bvalue", "secret\r\nX-Injected: 1", "secret\x7f"):
        with pytest.raises(PacklyValidationError, match="not ASCII or are control characters") as caught:
            build_request(client, "GET", "/v1/orders", headers={"X-Secret": value})
        assert "secret" not in str(caught.value).replace("X-Secret", "")
