"""Requests and answers: the endpoint path rule, building a request, reading an answer.

One rule each for the sync and async paths: where an endpoint may point (``endpoint_path``),
what httpx cannot send (``build_request``), a non-2xx answer as ``PacklyAPIError``
(``raise_for_packly_status``) and a body as JSON (``json_body``).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import httpx

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyError, read_error_body, redactor_for
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.retries import attempts_made

__all__ = ["QueryParams", "RequestOptions", "build_request", "endpoint_path", "json_body", "raise_for_packly_status"]

#: What a request takes as ``params``: a mapping, or (key, value) pairs when a key repeats or
#: the order matters (``quotation_params`` builds pairs).
QueryParams = Mapping[str, Any] | Sequence[tuple[str, Any]]


class RequestOptions(TypedDict, total=False):
    """What ``PacklyHook.request``/``arequest`` pass on to the request: each optional."""

    params: QueryParams | None
    json: Any
    data: Mapping[str, Any] | None
    headers: Mapping[str, str] | None


def endpoint_path(connection: PacklyConnection, endpoint: str) -> str:
    """``endpoint`` as a path under the connection's base URL, dot segments resolved.

    A full URL is accepted only under the base URL: the bearer token must never be sent to
    another host. Only the path is looked at (a query may hold a URL: ``?next=https://...``).
    ``.`` and ``..`` segments, also percent-encoded (``%2e%2e``), are resolved here, and an
    endpoint whose ``..`` would climb above the base URL's path is refused: the server (or a
    proxy) would resolve them otherwise, and reach paths the connection does not name.
    """
    cut = min((i for i in (endpoint.find("?"), endpoint.find("#")) if i >= 0), default=len(endpoint))
    path, rest = endpoint[:cut], endpoint[cut:]
    if "://" in path:
        if not (path == connection.base_url or path.startswith(connection.base_url + "/")):
            raise PacklyError(
                f"Endpoint {endpoint!r} is not under the connection's Base URL {connection.base_url!r}; "
                "give a path such as '/v1/reseller/orders' so the token is only sent to Packly."
            )
        path = path[len(connection.base_url) :]
    return _resolve_dot_segments(path.lstrip("/"), endpoint, connection) + rest


def _resolve_dot_segments(path: str, endpoint: str, connection: PacklyConnection) -> str:
    """``/`` + ``path`` with ``.``/``..`` segments resolved (RFC 3986 5.2.4), plain or percent-encoded."""
    kept: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        decoded = _fully_unquoted(segment)
        last = index == len(segments) - 1
        if decoded in (".", ".."):
            if decoded == "..":
                if not kept:
                    raise _outside_base(endpoint, connection)
                kept.pop()
            if last:
                kept.append("")  # "a/b/.." is "a/", as in RFC 3986
            continue
        if any(part in (".", "..") for part in re.split(r"[/\\]", decoded)):
            # "..%2F.." or "..%5C": a server that decodes the slash would climb with it.
            raise _outside_base(endpoint, connection)
        kept.append(segment)
    return "/" + "/".join(kept)


def _fully_unquoted(segment: str) -> str:
    """``segment`` percent-decoded until it no longer changes (``%252e`` is a dot to a server
    that decodes twice)."""
    for _ in range(4):
        decoded = urllib.parse.unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def _outside_base(endpoint: str, connection: PacklyConnection) -> PacklyError:
    base_path = urllib.parse.urlsplit(connection.base_url).path or "/"
    return PacklyError(
        f"Endpoint {endpoint!r} leads outside the connection's Base URL path {base_path!r} (its '..' segments, "
        "plain or percent-encoded, climb above it); give a path under it such as '/v1/reseller/orders'."
    )


def build_request(client: httpx.Client | httpx.AsyncClient, method: str, url: str, **options: Any) -> httpx.Request:
    """``client.build_request``, refusing what httpx cannot send as a ``PacklyValidationError``:
    an endpoint holding CR/LF, a header value that is not ASCII (never quoted: it may be a secret).

    The error is raised outside the ``except`` block, so it has no ``__context__``: httpx's own
    frames hold a half-built URL whose ``repr`` fails in a traceback printed with its locals.
    """
    try:
        return client.build_request(method, url, **options)
    except httpx.InvalidURL as exc:
        problem = (
            f"Endpoint {url!r} is not a URL path that can be sent ({exc}); give a path such as "
            "'/v1/reseller/orders', without spaces or control characters."
        )
    except UnicodeEncodeError:
        problem = (
            f"A header of {method} {url!r} holds characters that are not ASCII, which HTTP headers cannot "
            "carry; its value is not shown. Encode it (e.g. percent-encoding) or leave it out."
        )
    raise PacklyValidationError(problem)


def raise_for_packly_status(response: httpx.Response) -> None:
    """Raise ``PacklyAPIError`` with Packly's envelope parsed if ``response`` is not 2xx."""
    if response.is_success:
        return
    response.read()
    # The body may echo the request's credentials: the token it carried, the connection's secrets.
    body = read_error_body(response.content, response.headers.get("content-type", ""), redactor_for(response.request))
    raise PacklyAPIError.from_body(
        http_status=response.status_code,
        method=response.request.method,
        path=response.request.url.path,
        body=body,
        attempts=attempts_made(response),
    )


def json_body(response: httpx.Response) -> Any:
    """The body as JSON, or a ``PacklyError`` that says what it was instead."""
    try:
        return response.json()
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise PacklyError(
            f"Packly answered {response.request.method} {response.request.url.path} with HTTP "
            f"{response.status_code} but the body was not JSON ({kind}, {len(response.content)} bytes)."
        ) from None
