"""The Packly sandbox ASGI app: a local imitation of the documented Packly REST API.

It lets example DAGs and tests run without a Packly account. Where Packly documents a
behaviour the app follows it; where Packly does not, the docstrings say so and the choice is
a field of :class:`SandboxConfig`.

Endpoints (the first four are Packly's, the others the sandbox's own):

* ``POST /v1/oauth2/token``: client-credentials token (:func:`token_endpoint`);
* ``GET /v1/reseller/dieline``: die line PDF or base64 JSON (:func:`dieline_endpoint`);
* ``GET /v1/reseller/quotation``: prices (:func:`quotation_endpoint`);
* ``GET /v1/reseller/orders``: paged order list (:func:`orders_endpoint`);
* ``GET /_sandbox/stats``, ``POST /_sandbox/revoke-tokens``, ``POST /_sandbox/reset-clock``:
  sandbox control. They need no authentication: the sandbox binds to loopback by default
  and holds no real data. They are never faulted.
* ``POST /_sandbox/v1/writes`` and ``GET /_sandbox/v1/writes/{key}``: a write with a
  countable side effect, and its read-back (:func:`write_endpoint`, :func:`read_write_endpoint`).
  Not Packly paths: every documented Packly endpoint is a read, and proving that a client
  never duplicates a POST needs one that is not. They take the bearer token like the API.

``SandboxConfig.faults`` (a :class:`~airflow_provider_packly.sandbox.faults.FaultConfig`)
injects deterministic faults into the token endpoint, the API and the write endpoints: see
:mod:`airflow_provider_packly.sandbox.faults`.

The app logs nothing itself, and in particular never logs headers, credentials or tokens.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

# SandboxConfig and default_credentials live in config.py (so that state.py needs no app
# import); still importable from here.
from airflow_provider_packly.sandbox.config import SandboxConfig, default_credentials  # noqa: F401
from airflow_provider_packly.sandbox.dieline import dieline_pdf, format_mm, validate_box
from airflow_provider_packly.sandbox.errors import (
    EnvelopeError,
    envelope,
    request_echo,
    validation_error,
)
from airflow_provider_packly.sandbox.faults import (
    TOKEN_PATH,
    WRITES_PATH,
    FaultInjectionMiddleware,
    fault_decision,
)
from airflow_provider_packly.sandbox.orders import build_order, page_numbers
from airflow_provider_packly.sandbox.quotation import BracketQueryError, parse_bracket_query, quote

# JSON_MEDIA_TYPE and accepts_gzip lived here before responses.py: still importable from here.
from airflow_provider_packly.sandbox.responses import (  # noqa: F401
    JSON_MEDIA_TYPE,
    accepts_gzip,
    json_response,
)
from airflow_provider_packly.sandbox.state import SandboxState

#: Longest key accepted by the write endpoint (the sandbox's choice).
MAX_WRITE_KEY_LENGTH = 200


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _unauthorized(message: str, scheme: str) -> EnvelopeError:
    """A 401 envelope with code ``UNAUTHORIZED`` (the sandbox's choice, see token_endpoint)."""
    return EnvelopeError(
        401,
        "UNAUTHORIZED",
        message,
        headers={"WWW-Authenticate": f'{scheme} realm="Packly sandbox"'},
    )


# -- authentication --------------------------------------------------------------------------------
def _check_client(request: Request, config: SandboxConfig) -> None:
    """Check ``Authorization: Basic base64(client_id:client_secret)`` for the played env."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise _unauthorized(
            "Client authentication required: send Authorization: Basic base64(client_id:client_secret)",
            "Basic",
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("Malformed Basic credentials", "Basic") from None
    client_id, colon, client_secret = decoded.partition(":")
    if not colon:
        raise _unauthorized("Malformed Basic credentials", "Basic")

    def matches(pair: tuple[str, str]) -> bool:
        id_ok = hmac.compare_digest(client_id.encode(), pair[0].encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), pair[1].encode())
        return id_ok and secret_ok

    if matches(config.credentials[config.environment]):
        return
    for environment, pair in config.credentials.items():
        if environment != config.environment and matches(pair):
            raise _unauthorized(
                f"These client credentials belong to the {environment} environment; this server"
                f" is the {config.environment} environment, and credentials do not cross"
                " environments",
                "Basic",
            )
    raise _unauthorized("Invalid client credentials", "Basic")


def require_bearer(request: Request) -> None:
    """Check ``Authorization: Bearer <token>``; the token is compared as an exact string.

    Missing, unknown, revoked or expired tokens get a 401 ``UNAUTHORIZED`` envelope. The
    scheme name is case-insensitive (RFC 6750), the token is not.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("An access token is required: send Authorization: Bearer <token>", "Bearer")
    status = _state(request).token_status(token)
    if status == "expired":
        raise _unauthorized("The access token has expired; request a new one", "Bearer")
    if status != "valid":
        raise _unauthorized("The access token is invalid or has been revoked", "Bearer")


# -- Packly endpoints ------------------------------------------------------------------------------
async def token_endpoint(request: Request) -> Response:
    """``POST /v1/oauth2/token``: issue an access token for the client credentials grant.

    Checks, in order: ``Authorization: Basic`` with this environment's client ID and secret
    (401), then the ``application/x-www-form-urlencoded`` body: exactly one
    ``grant_type=client_credentials`` (else 400 ``VALIDATION_ERROR`` path ``grant_type``,
    item code ``TKN_1000``) and exactly one ``scope=external`` (path ``scope``, ``TKN_1001``).
    The body is parsed whatever its Content-Type (the sandbox's choice), so a JSON body simply
    lacks ``grant_type``.

    Packly does not document the token endpoint's error codes: ``UNAUTHORIZED`` (401) and
    the ``TKN_*`` item codes are the sandbox's choice.

    Success: ``{"token_type": config.token_type, "access_token": ..., "expires_in":
    config.token_lifetime}``, gzipped when the client accepts gzip, like Packly's example.
    """
    state = _state(request)
    state.count_token_request()
    config = state.config
    _check_client(request, config)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    if form.get("grant_type") != ["client_credentials"]:
        raise validation_error("TKN_1000", "grant_type", "grant_type is required and must be client_credentials")
    if form.get("scope") != ["external"]:
        raise validation_error("TKN_1001", "scope", "scope is required and must be external")
    token = state.issue_token()
    return json_response(
        request,
        {
            "token_type": config.token_type,
            "access_token": token,
            "expires_in": config.token_lifetime,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


async def dieline_endpoint(request: Request) -> Response:
    """``GET /v1/reseller/dieline``: the die line of a box as PDF bytes or base64 JSON.

    Query: ``article``, ``material``, ``width``, ``depth``, ``height`` (validated fail-fast by
    :func:`~airflow_provider_packly.sandbox.dieline.validate_box`: ``DLN_1100``..``DLN_1104``),
    then ``type``: ``pdf`` (default) or ``json``; anything else is ``DLN_1105`` path ``type``
    (not documented by Packly; the sandbox's choice).

    ``type=pdf`` answers ``application/pdf`` (never gzipped); ``type=json`` answers
    ``{"request": ..., "response": {"buffer": <base64 PDF>, "mime_type": "application/pdf",
    "encoding": "base64"}}`` as documented.
    """
    require_bearer(request)
    config = _state(request).config
    params = request.query_params
    box = validate_box(
        {name: params.get(name) for name in ("article", "material", "width", "depth", "height")},
        materials=config.materials,
        max_dimension_mm=config.max_dimension_mm,
    )
    kind = params.get("type", "pdf")
    if kind not in ("pdf", "json"):
        raise validation_error("DLN_1105", "type", "type must be pdf or json")
    pdf = dieline_pdf(box, padding_bytes=config.dieline_padding_bytes)
    if kind == "json":
        return json_response(
            request,
            {
                "request": request_echo(request),
                "response": {
                    "buffer": base64.b64encode(pdf).decode("ascii"),
                    "mime_type": "application/pdf",
                    "encoding": "base64",
                },
            },
        )
    filename = (
        f"dieline-{box.article}-{box.material}-"
        f"{format_mm(box.width)}x{format_mm(box.depth)}x{format_mm(box.height)}.pdf"
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )


async def quotation_endpoint(request: Request) -> Response:
    """``GET /v1/reseller/quotation``: price a list of items given in bracket notation.

    See :func:`~airflow_provider_packly.sandbox.quotation.quote` for validation codes and
    pricing. The body past ``request`` is not documented by Packly: its shape is the
    sandbox's choice (``currency``, ``shipping``, priced ``items`` and totals).
    """
    require_bearer(request)
    config = _state(request).config
    try:
        query = parse_bracket_query(request.query_params.multi_items())
    except BracketQueryError as exc:
        raise validation_error("QUO_1000", exc.name, str(exc)) from None
    body = quote(query, materials=config.materials, max_dimension_mm=config.max_dimension_mm)
    return json_response(request, {"request": request_echo(request), "response": body})


_SORT_SPELLINGS: dict[str, bool] = {
    "desc": True,
    "descending": True,
    "asc": False,
    "ascending": False,
}


def _non_negative_int(raw: str | None) -> int | None:
    if raw is None or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


async def orders_endpoint(request: Request) -> Response:
    """``GET /v1/reseller/orders``: one page of orders, sorted by creation.

    Query (validation codes ``ORD_1100``..``ORD_1102`` are not documented by Packly; the
    sandbox's choice):

    * ``page``: zero-based integer >= 0, default 0 (``ORD_1100``); a page past the end is
      ``[]``;
    * ``limit``: 1..``config.orders_max_limit`` (100), default ``config.orders_default_limit``
      (10) (``ORD_1101``); neither bound is documented by Packly; with the test knob
      ``config.orders_limit_cap`` set, a page holds at most that many orders;
    * ``sort``: Packly says "ascending or descending" without the spelling, so ``asc``,
      ``desc``, ``ascending`` and ``descending`` are accepted; default ``desc``, newest first
      (the sandbox's choice) (``ORD_1102``).

    Each order's status advances with time from the moment a listing first serves it: see
    :mod:`airflow_provider_packly.sandbox.orders`.
    """
    require_bearer(request)
    state = _state(request)
    config = state.config
    params = request.query_params
    page = _non_negative_int(params.get("page", "0"))
    if page is None:
        raise validation_error("ORD_1100", "page", "page must be an integer >= 0 (zero-based)")
    limit = _non_negative_int(params.get("limit", str(config.orders_default_limit)))
    if limit is None or not 1 <= limit <= config.orders_max_limit:
        raise validation_error("ORD_1101", "limit", f"limit must be an integer from 1 to {config.orders_max_limit}")
    sort = params.get("sort", "desc")
    if sort not in _SORT_SPELLINGS:
        raise validation_error("ORD_1102", "sort", "sort must be asc or desc")
    if config.orders_limit_cap is not None:
        limit = min(limit, config.orders_limit_cap)  # the test knob: a silent cap
    numbers = page_numbers(order_count=config.order_count, page=page, limit=limit, descending=_SORT_SPELLINGS[sort])
    elapsed = state.order_elapsed(numbers)
    orders = [build_order(number, seconds / config.order_step_seconds) for number, seconds in zip(numbers, elapsed)]
    return json_response(request, {"request": request_echo(request), "response": orders})


# -- sandbox writes --------------------------------------------------------------------------------
def _json_object(raw: bytes) -> dict[str, Any] | None:
    """``raw`` parsed as a JSON object, or ``None`` if it is not one."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


async def write_endpoint(request: Request) -> Response:
    """``POST /_sandbox/v1/writes`` (sandbox only): apply one write, counted per key.

    Body: ``{"key": "<string>", "value": <any>}`` (``value`` is accepted and ignored). Every
    arrival with a string ``key`` counts in ``state.write_attempts``; then the bearer token
    is checked (401), then the body (400 ``VALIDATION_ERROR``: ``SBX_1000`` path ``body`` when
    it is not a JSON object, ``SBX_1001`` path ``key`` when ``key`` is not a string of 1 to
    200 characters); then ``state.writes[key] += 1`` and a 201
    ``{"request": ..., "response": {"key": key, "applied": n}}``.

    If the request's fault says "not processed" (429, or 503 with ``Retry-After``) nothing
    is applied: the fault injector answers instead of this endpoint. For any other fault the
    write is applied first and the fault then hits the response. So ``state.writes[key]``
    of 2 or more means a client resent a POST it must not have.
    """
    state = _state(request)
    decision = fault_decision(request.scope)
    payload = _json_object(await request.body())
    key = payload.get("key") if payload is not None else None
    if isinstance(key, str):
        state.record_write_attempt(key, decision)
    require_bearer(request)
    if payload is None:
        raise validation_error("SBX_1000", "body", "the body must be a JSON object")
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_WRITE_KEY_LENGTH:
        raise validation_error("SBX_1001", "key", f"key must be a string of 1 to {MAX_WRITE_KEY_LENGTH} characters")
    if decision is not None and decision.rejects_before_processing:
        # Not processed: the fault injector discards this and sends the 429/503 instead.
        return Response(status_code=503)
    applied = state.apply_write(key, decision)
    return json_response(
        request,
        {"request": request_echo(request), "response": {"key": key, "applied": applied}},
        status_code=201,
    )


async def read_write_endpoint(request: Request) -> Response:
    """``GET /_sandbox/v1/writes/{key}`` (sandbox only): how many writes ``key`` has.

    Answers ``{"request": ..., "response": {"key": key, "applied": n}}`` (``n`` is 0 for a
    key never written); needs the bearer token and is faulted like the API.
    """
    require_bearer(request)
    key: str = request.path_params["key"]
    applied = _state(request).applied_writes(key)
    return json_response(request, {"request": request_echo(request), "response": {"key": key, "applied": applied}})


# -- sandbox control -------------------------------------------------------------------------------
async def stats_endpoint(request: Request) -> Response:
    """``GET /_sandbox/stats`` (sandbox only): counters; never tokens or secrets.

    Besides the token and API counters: ``faults`` (the active configuration or ``null``),
    ``fault_counts`` / ``token_fault_counts`` (decisions by kind, ``"none"`` included),
    ``forced_revocations``, ``write_attempts``, ``writes_applied``, ``write_keys``,
    ``write_keys_duplicated`` (keys written 2 or more times) and ``write_outcomes``
    (``"<kind>:applied"`` / ``"<kind>:not_applied"`` counts of write requests).
    """
    return json_response(request, _state(request).stats())


async def revoke_tokens_endpoint(request: Request) -> Response:
    """``POST /_sandbox/revoke-tokens`` (sandbox only): invalidate every outstanding token."""
    return json_response(request, {"revoked": _state(request).revoke_all_tokens()})


async def reset_clock_endpoint(request: Request) -> Response:
    """``POST /_sandbox/reset-clock`` (sandbox only): restart every order timeline.

    Each order starts again at its time-zero state the next time a listing serves it.
    """
    _state(request).reset_clock()
    return json_response(request, {"elapsed_seconds": 0.0})


# -- errors ----------------------------------------------------------------------------------------
async def _packly_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EnvelopeError)
    return json_response(request, envelope(request, exc), exc.http_status_code, exc.headers)


_HTTP_ERROR_CODES: dict[int, tuple[str, str]] = {
    404: ("NOT_FOUND", "The requested resource does not exist"),
    405: ("METHOD_NOT_ALLOWED", "This method is not allowed on this resource"),
}


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    """Render routing errors (404, 405) as Packly envelopes.

    404 uses Packly's ``NOT_FOUND``; ``METHOD_NOT_ALLOWED`` (405) is not documented by
    Packly; the sandbox's choice.
    """
    assert isinstance(exc, HTTPException)
    code, message = _HTTP_ERROR_CODES.get(exc.status_code, ("INTERNAL_SERVER_ERROR", str(exc.detail)))
    error = EnvelopeError(exc.status_code, code, message, headers=dict(exc.headers or {}))
    return json_response(request, envelope(request, error), exc.status_code, error.headers)


async def _internal_error_handler(request: Request, exc: Exception) -> Response:
    """Answer an unexpected exception with a 500 ``INTERNAL_SERVER_ERROR`` envelope."""
    error = EnvelopeError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
    return json_response(request, envelope(request, error), 500)


class _CountApiRequests:
    """ASGI middleware counting requests by path under ``/v1/`` (token endpoint excluded)."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/v1/") and path != TOKEN_PATH:
                self.state.count_api_request(path)
        await self.app(scope, receive, send)


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """Build a sandbox app for ``config`` (defaults if ``None``).

    The live state (counters, tokens, order clock, faults, writes) is ``app.state.sandbox``,
    a :class:`~airflow_provider_packly.sandbox.state.SandboxState`; the order clock starts
    now. Faults are injected inside the request counting, so faulted requests still count.
    Trailing-slash redirects are disabled, so ``/v1/reseller/orders/`` is a 404 rather than a
    redirect a client might follow without its ``Authorization`` header.
    """
    config = config or SandboxConfig()
    state = SandboxState(config)
    app = Starlette(
        routes=[
            Route(TOKEN_PATH, token_endpoint, methods=["POST"]),
            Route("/v1/reseller/dieline", dieline_endpoint, methods=["GET"]),
            Route("/v1/reseller/quotation", quotation_endpoint, methods=["GET"]),
            Route("/v1/reseller/orders", orders_endpoint, methods=["GET"]),
            Route("/_sandbox/stats", stats_endpoint, methods=["GET"]),
            Route("/_sandbox/revoke-tokens", revoke_tokens_endpoint, methods=["POST"]),
            Route("/_sandbox/reset-clock", reset_clock_endpoint, methods=["POST"]),
            Route(WRITES_PATH, write_endpoint, methods=["POST"]),
            Route(WRITES_PATH + "/{key}", read_write_endpoint, methods=["GET"]),
        ],
        middleware=[
            Middleware(_CountApiRequests, state=state),
            Middleware(FaultInjectionMiddleware, state=state),
        ],
        exception_handlers={
            EnvelopeError: _packly_error_handler,
            HTTPException: _http_error_handler,
            Exception: _internal_error_handler,
        },
    )
    app.router.redirect_slashes = False
    app.state.sandbox = state
    return app
