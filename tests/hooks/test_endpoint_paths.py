"""An endpoint never leaves the Base URL's path; a URL in its query is just data (issue 9, item 16)."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_packly.exceptions import PacklyError
from airflow_provider_packly.hooks.packly import PacklyHook, endpoint_path

BASE = "https://gateway.example.com/packly"


@pytest.fixture
def prefixed(make_connection):
    return make_connection(base_url=BASE)


@pytest.mark.parametrize(
    "endpoint",
    [
        "/../admin",
        "/v1/../../admin",
        "v1/reseller/../../../admin",
        "/%2e%2e/admin",
        "/v1/%2E%2E/%2e%2E/admin",
        "/v1/.%2e/..%2F../admin",
        "/v1/..%5c..%5cadmin",
        "/%252e%252e/admin",
        f"{BASE}/../admin",
        f"{BASE}/v1/%2e%2e/%2e%2e/admin",
    ],
)
def test_dot_segments_that_leave_the_base_path_are_refused(prefixed, endpoint):
    with pytest.raises(PacklyError, match="outside the connection's Base URL"):
        endpoint_path(prefixed, endpoint)


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("/v1/reseller/orders", "/v1/reseller/orders"),
        ("v1/reseller/orders", "/v1/reseller/orders"),
        ("/v1/./reseller/orders", "/v1/reseller/orders"),
        ("/v1/reseller/x/../orders", "/v1/reseller/orders"),
        ("/v1/reseller/%2e%2e/reseller/orders", "/v1/reseller/orders"),
        ("/v1/reseller/orders/.", "/v1/reseller/orders/"),
        (
            "/v1/reseller/orders?next=https://elsewhere.example/x",
            "/v1/reseller/orders?next=https://elsewhere.example/x",
        ),
        ("/v1/reseller/orders?back=../../x", "/v1/reseller/orders?back=../../x"),
        (
            f"{BASE}/v1/reseller/orders?next=https://elsewhere.example/x",
            "/v1/reseller/orders?next=https://elsewhere.example/x",
        ),
        ("/v1/files/a%2Fb", "/v1/files/a%2Fb"),
        ("/v1/files/..foo", "/v1/files/..foo"),
    ],
)
def test_paths_inside_the_base_path_are_normalised_and_kept(prefixed, endpoint, path):
    assert endpoint_path(prefixed, endpoint) == path


def test_a_full_url_to_another_host_is_still_refused(prefixed):
    with pytest.raises(PacklyError, match="not under the connection's Base URL"):
        endpoint_path(prefixed, "https://elsewhere.example/packly/v1/reseller/orders")


def test_the_request_sent_stays_under_the_prefix(make_connection):
    seen: list[str] = []

    def packly(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        if request.url.path.endswith("/v1/oauth2/token"):
            return httpx.Response(200, json={"token_type": "bearer", "access_token": "t%2F", "expires_in": 3600})
        return httpx.Response(200, json={})

    with PacklyHook(connection=make_connection(base_url=BASE), transport=httpx.MockTransport(packly)) as hook:
        hook.request("GET", "/v1/reseller/orders?next=https://elsewhere.example/x")
        with pytest.raises(PacklyError):
            hook.request("GET", "/v1/%2e%2e/%2e%2e/admin")
        with pytest.raises(PacklyError):
            hook.request("GET", "/../admin")
    assert seen == ["/packly/v1/oauth2/token", "/packly/v1/reseller/orders?next=https://elsewhere.example/x"]
