"""JSON responses as the sandbox sends them: UTF-8 JSON, gzipped when the client accepts it.

Shared by the endpoints (:mod:`~airflow_provider_packly.sandbox.app`) and the fault injector
(:mod:`~airflow_provider_packly.sandbox.faults`), which renders its own error envelopes.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

JSON_MEDIA_TYPE = "application/json; charset=utf-8"


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (``gzip;q=0`` does not)."""
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def json_response(
    request: Request,
    payload: Any,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Serialise ``payload`` as ``application/json; charset=utf-8``, gzipped when accepted.

    Packly's documented token example answers ``Accept-Encoding: gzip`` with a gzip body of
    about 140 bytes, so every JSON response is compressed by hand whatever its size
    (Starlette's GZipMiddleware would skip bodies under 500 bytes). Die line PDFs are never
    compressed (the sandbox's choice), which keeps their ``Content-Length`` meaningful.
    """
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    all_headers = {"Vary": "Accept-Encoding", **(headers or {})}
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        body = gzip.compress(body, mtime=0)
        all_headers["Content-Encoding"] = "gzip"
    return Response(body, status_code=status_code, headers=all_headers, media_type=JSON_MEDIA_TYPE)
