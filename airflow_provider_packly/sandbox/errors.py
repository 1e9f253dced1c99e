"""The Packly error envelope, as the sandbox renders it.

Packly documents one JSON shape for every error (packly.io/errors)::

    {"request":  {"uri": "/v1/reseller/dieline", "method": "GET", "query": {...}},
     "response": {"code": "VALIDATION_ERROR", "message": "...", "http_status_code": 400,
                  "errors": [{"code": "DLN_1101", "path": "material", "message": "..."}]}}

``errors`` is optional and, because Packly fails fast, holds at most one element. The
sandbox's choice (not documented by Packly): when there is no item detail the ``errors`` key
is **omitted** rather than sent as ``[]``, so a client is exercised against the optional key
being absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

#: Top-level ``response.message`` used for ``VALIDATION_ERROR``; this sentence is the one in
#: Packly's documented example.
VALIDATION_MESSAGE = "Some parameters are wrong or missing"


@dataclass(frozen=True)
class ErrorItem:
    """The single element of ``response.errors``: which parameter failed and why."""

    code: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the JSON form of the item."""
        return {"code": self.code, "path": self.path, "message": self.message}


class EnvelopeError(Exception):
    """Raised by a handler to answer with the Packly error envelope.

    The sandbox's own (server-side) exception: not the provider's client-side
    :class:`airflow_provider_packly.exceptions.PacklyError`, hence a name of its own.

    The app's exception handler turns it into a JSON response whose status is
    ``http_status_code``; raising keeps the fail-fast validators short.
    """

    def __init__(
        self,
        http_status_code: int,
        code: str,
        message: str,
        item: ErrorItem | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status_code = http_status_code
        self.code = code
        self.message = message
        self.item = item
        self.headers = headers or {}


def validation_error(code: str, path: str, message: str) -> EnvelopeError:
    """Build a 400 ``VALIDATION_ERROR`` whose single item names ``path`` and ``code``."""
    return EnvelopeError(400, "VALIDATION_ERROR", VALIDATION_MESSAGE, ErrorItem(code, path, message))


def request_echo(request: Request) -> dict[str, Any]:
    """Return the ``request`` part of every Packly body: path, method and query parameters.

    The query is a flat mapping of the parameters as received (for a repeated key, the last
    value), so bracket-notation keys such as ``items[0][article]`` appear verbatim. Request
    bodies and headers are never echoed, so credentials cannot leak through this part.
    """
    return {
        "uri": request.url.path,
        "method": request.method,
        "query": dict(request.query_params),
    }


def envelope(request: Request, error: EnvelopeError) -> dict[str, Any]:
    """Return the full error envelope for ``error`` raised while serving ``request``."""
    response: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "http_status_code": error.http_status_code,
    }
    if error.item is not None:
        response["errors"] = [error.item.as_dict()]
    return {"request": request_echo(request), "response": response}
