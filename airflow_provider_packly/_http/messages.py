"""Requests and answers at the httpx edge: building a request, reading an answer.

One rule each for the sync and async paths: what httpx cannot send (``build_request``), a
non-2xx answer as ``PacklyAPIError`` (``raise_for_packly_status``), an answer as the plain
``core.api.Reply`` (``reply_of``) and its body as JSON (``json_body``). Where an endpoint may
point (``endpoint_path``) is a pure rule in ``core.api``, re-exported here.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict

import httpx

from airflow_provider_packly.core.api import Reply, endpoint_path
from airflow_provider_packly.exceptions import PacklyAPIError, body_error, read_error_body, redactor_for
from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.retries import attempts_made

__all__ = [
    "QueryParams",
    "RequestOptions",
    "build_request",
    "checked_stream",
    "endpoint_path",
    "json_body",
    "raise_for_packly_status",
    "reply_of",
]

#: What a request takes as ``params``: a mapping, or (key, value) pairs when a key repeats or
#: the order matters (``quotation_params`` builds pairs).
QueryParams = Mapping[str, Any] | Sequence[tuple[str, Any]]


class RequestOptions(TypedDict, total=False):
    """What ``PacklyHook.request``/``arequest`` pass on to the request: each optional."""

    params: QueryParams | None
    json: Any
    data: Mapping[str, Any] | None
    headers: Mapping[str, str] | None


def build_request(
    client: httpx.Client | httpx.AsyncClient,
    method: str,
    url: str,
    *,
    params: QueryParams | None = None,
    headers: Mapping[str, str] | None = None,
    **options: Any,
) -> httpx.Request:
    """A request for ``url`` (a path under the client's base URL) with the client's headers,
    refusing what cannot be sent as a ``PacklyValidationError``: an endpoint holding CR/LF, a
    header value that is not ASCII or holds a control character (never quoted: it may be a
    secret). Checked here, before any transport, so every transport gives the same answer.

    What ``client.build_request`` does for the provider, at a third of its cost: no cookies
    (the provider keeps none), and the URL parsed once per path and query (``_url``).

    The error is raised outside the ``except`` block, so it has no ``__context__``: httpx's own
    frames hold a half-built URL whose ``repr`` fails in a traceback printed with its locals.
    """
    merged = client.headers
    if headers:
        if any(_NOT_IN_A_HEADER.search(value) for value in headers.values() if isinstance(value, str)):
            raise PacklyValidationError(_header_problem(method, url))
        merged = merged.copy()
    try:
        if headers:
            merged.update(headers)
        return httpx.Request(method, _full_url(str(client.base_url), url, params), headers=merged, **options)
    except httpx.InvalidURL as exc:
        problem = (
            f"Endpoint {url!r} is not a URL path that can be sent ({exc}); give a path such as "
            "'/v1/reseller/orders', without spaces or control characters."
        )
    except UnicodeEncodeError:
        problem = _header_problem(method, url)
    raise PacklyValidationError(problem)


def _header_problem(method: str, url: str) -> str:
    return (
        f"A header of {method} {url!r} holds characters that are not ASCII or are control characters, "
        "which HTTP headers cannot carry; its value is not shown. Encode it (e.g. percent-encoding) "
        "or leave it out."
    )


#: What no HTTP field value may hold (RFC 9110 5.5): control characters other than tab.
_NOT_IN_A_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _full_url(base_url: str, path: str, params: QueryParams | None) -> httpx.URL:
    """``base_url`` + ``path`` + ``params``, parsed once for each distinct call (polls repeat)."""
    query: tuple[tuple[str, Any], ...] = ()
    if params:
        query = tuple(params.items() if isinstance(params, Mapping) else params)
        try:
            hash(query)
        except TypeError:  # a list of values for one key: rare, not worth caching
            return _url(base_url, path, ()).copy_merge_params(params)  # type: ignore[arg-type]
    return _url(base_url, path, query)


@functools.lru_cache(maxsize=1024)
def _url(base_url: str, path: str, query: tuple[tuple[str, Any], ...]) -> httpx.URL:
    url = httpx.URL(base_url.rstrip("/") + path)
    return url.copy_merge_params(query) if query else url


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


@contextlib.contextmanager
def checked_stream(response: httpx.Response) -> Iterator[None]:
    """Around a streamed answer's use: a non-2xx status raised as ``PacklyAPIError`` first, and
    an httpx failure while the caller reads the body (``iter_bytes()`` & co.) as a ``PacklyError``.
    Closing the response is the caller's (``close`` or ``aclose``)."""
    try:
        raise_for_packly_status(response)
        yield
    except httpx.HTTPError as exc:
        raise body_error(exc, response.request) from exc


def reply_of(response: httpx.Response) -> Reply:
    """A read answer as the plain ``Reply`` that ``core.api``'s readers take."""
    return Reply(
        method=response.request.method,
        path=response.request.url.path,
        status=response.status_code,
        content_type=response.headers.get("content-type", ""),
        content=response.content,
        query=dict(response.request.url.params),
    )


def json_body(response: httpx.Response) -> Any:
    """The body as JSON, or a ``PacklyError`` that says what it was instead (``Reply.json``)."""
    return reply_of(response).json()
