"""A scripted Packly for operator, sensor and trigger tests (httpx.MockTransport handlers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.hooks.packly import PacklyHook

TOKEN_PATH = "/v1/oauth2/token"
ORDERS_PATH = "/v1/reseller/orders"
SECRET = "fake-client-secret-Vq7!"
TOKEN = "fake-token-AAAA%2FAAA%3D"

Handler = Callable[[httpx.Request], httpx.Response]


def order(order_id: str, status: str, products: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    items = [{"id": f"{order_id}-P{i}", "status": s} for i, s in enumerate(products or [], 1)]
    return {"id": order_id, "status": status, "items": items, **extra}


def page(*orders: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"request": {}, "response": list(orders)})


class FakePackly:
    """Answers the token endpoint; every other request gets the next scripted answer.

    ``answers`` items are responses or callables taking the request. Once the script is used up
    the last answer repeats. Every request is recorded (method, path, query) in ``calls``.
    """

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.token_requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            self.token_requests += 1
            return httpx.Response(200, json={"token_type": "bearer", "access_token": TOKEN, "expires_in": 3600})
        self.calls.append((request.method, request.url.path, dict(request.url.params)))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else _copy(answer)

    @property
    def api_methods(self) -> set[str]:
        return {method for method, _, _ in self.calls}

    def hook(self, **settings: Any) -> PacklyHook:
        transport = httpx.MockTransport(self)
        return PacklyHook(connection=fake_connection(**settings), transport=transport, async_transport=transport)


def _copy(response: httpx.Response) -> httpx.Response:
    """A fresh response each time (a response's stream can only be read once)."""
    return httpx.Response(response.status_code, headers=response.headers, content=response.content)


def fake_connection(**overrides: Any) -> PacklyConnection:
    """Settings for the fake; the hook's own retries are off unless asked for, so that tests see
    how operators, sensors and triggers handle each answer themselves."""
    settings: dict[str, Any] = {
        "client_id": "fake-client-id",
        "client_secret": SECRET,
        "base_url": "http://127.0.0.1:8089",
    }
    settings["retry_max_attempts"] = 1
    settings.update(overrides)
    return PacklyConnection(**settings)


def envelope(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(
            {"request": {}, "response": {"code": code, "message": message, "http_status_code": status}}
        ).encode(),
        headers={"content-type": "application/json"},
    )


def sandbox_connection_json(base_url: str) -> str:
    return json.dumps(
        {
            "conn_type": "packly",
            "login": "sandbox-client-id",
            "password": "sandbox-client-secret",
            "host": base_url,
            "extra": {"environment": "sandbox"},
        }
    )
