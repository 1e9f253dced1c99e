"""The tests' one scripted Packly (for httpx.MockTransport) and one settable clock.

Operator, sensor, trigger and hook tests script Packly's answers with :class:`FakePackly`;
token-cache and sandbox tests drive time with :class:`FakeClock`.
"""

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
#: The first token :class:`FakePackly` issues (then ``tok-2``, ``tok-3``, ...).
TOKEN = "tok-1"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """A settable clock (seconds): set ``now`` or call :meth:`advance`; pass the clock itself."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePackly:
    """A scripted Packly: answers the token endpoint itself, the API from a script.

    Tokens are ``tok-1``, ``tok-2``, ... (one per token request), or, with ``token_status``
    other than 200, an error envelope with that status. Every other request gets the next of
    ``answers`` (responses, or callables taking the request); once the script is used up the
    last answer repeats, and with no script at all the answer is an empty 200 listing.

    Recorded: ``token_requests``; ``calls``, each API request's (method, path, query);
    ``seen_authorization``, each API request's ``Authorization`` header.
    """

    def __init__(self, *answers: httpx.Response | Handler, token_status: int = 200) -> None:
        self.answers = list(answers) or [httpx.Response(200, json={"response": []})]
        self.token_status = token_status
        self.token_requests = 0
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.seen_authorization: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            self.token_requests += 1
            if self.token_status != 200:
                return httpx.Response(
                    self.token_status, json={"response": {"code": "UNAUTHORIZED", "message": "Bad client credentials"}}
                )
            return httpx.Response(
                200, json={"token_type": "bearer", "access_token": f"tok-{self.token_requests}", "expires_in": 3600}
            )
        self.calls.append((request.method, request.url.path, dict(request.url.params)))
        self.seen_authorization.append(request.headers.get("authorization", ""))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else _copy(answer)

    @property
    def api_methods(self) -> set[str]:
        return {method for method, _, _ in self.calls}

    def hook(self, **settings: Any) -> PacklyHook:
        """A hook on :func:`fake_connection` (``settings`` override it) that talks to this fake."""
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


def order(order_id: str, status: str, products: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    items = [{"id": f"{order_id}-P{i}", "status": s} for i, s in enumerate(products or [], 1)]
    return {"id": order_id, "status": status, "items": items, **extra}


def page(*orders: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"request": {}, "response": list(orders)})


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
