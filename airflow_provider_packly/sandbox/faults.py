"""Deterministic fault injection, so a client's retry policy can be proven against the sandbox.

A :class:`FaultConfig` (``SandboxConfig.faults``, or ``SandboxState.set_faults`` at run time)
makes a share of requests fail in one of these ways (:data:`FAULT_KINDS`):

==============  ==========================================================================
kind            what the client sees (httpx, over a real socket)
==============  ==========================================================================
``500``         HTTP 500, Packly envelope ``INTERNAL_SERVER_ERROR``
``502``         HTTP 502, an HTML page like a proxy's, ``text/html``
``503``         HTTP 503; alternately (the 1st, 3rd, ... 503) with ``Retry-After`` and a
                ``SERVICE_UNAVAILABLE`` envelope, and (the 2nd, 4th, ...) an HTML page
                without ``Retry-After``
``429``         HTTP 429 with ``Retry-After``, envelope ``TOO_MANY_REQUESTS``
``reset``       the endpoint's status line and headers (``Content-Length`` > 0), no body, then
                the connection closes: ``httpx.RemoteProtocolError``
``truncated``   the endpoint's status line and headers, the first half of its body, then the
                connection closes: ``httpx.RemoteProtocolError``
``slow``        the endpoint's response, sent ``slow_seconds`` late (or never, if the client
                hangs up first): ``httpx.ReadTimeout`` for a shorter read timeout
``revoke``      the endpoint's response, unchanged; every outstanding token is revoked just
                before its last body bytes are sent, so the next call gets a 401
``echo``        opt-in (not in the default kinds; allowed on the token endpoint too): a 502
                HTML page quoting the request line and every request header, the
                ``Authorization`` header included, as a misconfigured proxy's debug page
                does; a client must never carry what it quotes into its errors or logs
``trickle``     opt-in (not in the default kinds): the endpoint's status line and headers at
                once, then its body one byte per ``trickle_seconds``, so that no read timeout
                ever fires; only a client's overall deadline ends it
``truncated-    the endpoint's status line and headers with its body gzipped (if it was not
gzip``          already) and its last tenth (at least the 8-byte trailer) cut off, sent
                complete with a ``Content-Length`` that matches what is sent, as a proxy
                that lost the tail and re-framed the rest would: the HTTP framing is whole,
                only the gzip stream is not (httpx alone decodes it as a shorter success)
==============  ==========================================================================

Which requests are eligible: the Packly API (``/v1/reseller/...``) and the sandbox's write
endpoints (``/_sandbox/v1/writes...``) draw from ``rate`` and ``kinds``; the token endpoint
(``POST /v1/oauth2/token``) draws from its own ``token_rate`` and ``token_kinds``, limited to
the status faults so that a rejection of the credentials (401) stays distinguishable. The
sandbox control endpoints (``/_sandbox/stats`` and the like) are never faulted.

Determinism: each channel (API, token) has its own :class:`random.Random`, seeded from
``seed``, from which exactly one number is drawn per eligible request, under the state's
lock, in arrival order. So the same sequence of sequential requests meets the same faults.

Side effects (what a client's retry rule relies on): every eligible request still reaches
its endpoint. ``429`` and ``503`` with ``Retry-After`` mean "not processed": the write
endpoint sees :attr:`FaultDecision.rejects_before_processing` and applies nothing. Every
other kind replaces or delays the response of a request that *was* processed (a write is
applied first), so a client must not resend a POST after them. Token faults are answered
before the token endpoint runs: no token is issued.
"""

from __future__ import annotations

import gzip
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Literal, Protocol

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_packly.sandbox.errors import EnvelopeError, envelope

# The kinds have their own leaf module; importable from here too, as before.
from airflow_provider_packly.sandbox.fault_kinds import (
    EVERY_FAULT_KIND,
    FAULT_KINDS,
    OPT_IN_FAULT_KINDS,  # noqa: F401
    RESPONSE_FAULT_KINDS,
    STATUS_FAULT_KINDS,
)
from airflow_provider_packly.sandbox.responses import json_response

TOKEN_PATH = "/v1/oauth2/token"
API_PREFIX = "/v1/reseller/"
WRITES_PATH = "/_sandbox/v1/writes"

#: How many :class:`FaultDecision` records ``SandboxState.fault_log`` keeps (the newest).
FAULT_LOG_LIMIT = 50_000
#: The ASGI scope key under which an eligible request carries its :class:`FaultDecision`.
FAULT_SCOPE_KEY = "packly_sandbox.fault"

Channel = Literal["api", "token"]


def _normalise_kinds(
    kinds: Mapping[str, float] | Sequence[str], allowed: tuple[str, ...], name: str
) -> dict[str, float]:
    """Turn ``kinds`` (kind -> weight, or kind names with weight 1) into a checked dict."""
    if isinstance(kinds, str):
        raise TypeError(f"{name} must be a mapping or a sequence of kinds, not a string")
    pairs = list(kinds.items()) if isinstance(kinds, Mapping) else [(kind, 1.0) for kind in kinds]
    weights: dict[str, float] = {}
    for kind, weight in pairs:
        if kind not in allowed:
            raise ValueError(f"unknown fault kind {kind!r} in {name}; allowed: {', '.join(allowed)}")
        if kind in weights:
            raise ValueError(f"fault kind {kind!r} appears twice in {name}")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"the weight of fault kind {kind!r} must be finite and >= 0")
        weights[kind] = weight
    return weights


@dataclass(frozen=True)
class FaultConfig:
    """Which share of requests fail, how, and from which seed (see the module docstring).

    * ``seed``: seeds the API and token channels' random generators.
    * ``rate``: probability, 0..1, that an eligible API or write request gets a fault.
    * ``kinds``: the faults drawn for those, ``{kind: weight}`` or a sequence of kinds (equal
      weights); default every kind of :data:`FAULT_KINDS`. Stored as a ``dict``.
    * ``token_rate``: probability, 0..1, that a token request gets a fault (default 0.0).
    * ``token_kinds``: the faults drawn for token requests, among :data:`STATUS_FAULT_KINDS`
      only (default all four).
    * ``slow_seconds``: how late a ``slow`` response is sent (default 2.0 s, meant to exceed
      the client's read timeout).
    * ``trickle_seconds``: the pause between two bytes of a ``trickle`` response (default 0.05 s).
    * ``retry_after_seconds``: the ``Retry-After`` of 429s and of half the 503s, an integer
      number of seconds as on the wire (default 0, so a soak test stays fast).
    * ``retry_after_as_date``: send ``Retry-After`` as an HTTP-date (now + the seconds,
      whole-second resolution) instead of a number of seconds.
    """

    seed: int = 0
    rate: float = 0.1
    kinds: Mapping[str, float] | Sequence[str] = FAULT_KINDS
    token_rate: float = 0.0
    token_kinds: Mapping[str, float] | Sequence[str] = STATUS_FAULT_KINDS
    slow_seconds: float = 2.0
    retry_after_seconds: int = 0
    retry_after_as_date: bool = False
    trickle_seconds: float = 0.05
    _weights: tuple[tuple[str, float], ...] = field(init=False, repr=False, compare=False)
    _token_weights: tuple[tuple[str, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check every field, and store ``kinds`` and ``token_kinds`` as dicts."""
        kinds = _normalise_kinds(self.kinds, EVERY_FAULT_KIND, "kinds")
        token_kinds = _normalise_kinds(self.token_kinds, RESPONSE_FAULT_KINDS, "token_kinds")
        for name, rate, weights in (
            ("rate", self.rate, kinds),
            ("token_rate", self.token_rate, token_kinds),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            if rate > 0 and sum(weights.values()) <= 0:
                raise ValueError(f"{name} is positive but no fault kind has a positive weight")
        if not math.isfinite(self.slow_seconds) or self.slow_seconds < 0:
            raise ValueError("slow_seconds must be finite and >= 0")
        if not math.isfinite(self.trickle_seconds) or self.trickle_seconds < 0:
            raise ValueError("trickle_seconds must be finite and >= 0")
        if (
            isinstance(self.retry_after_seconds, bool)
            or not isinstance(self.retry_after_seconds, int)
            or self.retry_after_seconds < 0
        ):
            raise ValueError("retry_after_seconds must be an integer >= 0 (Retry-After is whole)")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "token_kinds", token_kinds)
        object.__setattr__(self, "_weights", tuple(kinds.items()))
        object.__setattr__(self, "_token_weights", tuple(token_kinds.items()))

    @property
    def weights(self) -> tuple[tuple[str, float], ...]:
        """``kinds`` as ``(kind, weight)`` pairs, in the order given."""
        return self._weights

    @property
    def token_weights(self) -> tuple[tuple[str, float], ...]:
        """``token_kinds`` as ``(kind, weight)`` pairs, in the order given."""
        return self._token_weights

    def retry_after_value(self) -> str:
        """The ``Retry-After`` header value: integer seconds, or an HTTP-date if so configured."""
        if self.retry_after_as_date:
            return formatdate(time.time() + self.retry_after_seconds, usegmt=True)
        return str(self.retry_after_seconds)

    def describe(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready data (for ``/_sandbox/stats``)."""
        return {
            "seed": self.seed,
            "rate": self.rate,
            "kinds": dict(self.weights),
            "token_rate": self.token_rate,
            "token_kinds": dict(self.token_weights),
            "slow_seconds": self.slow_seconds,
            "retry_after_seconds": self.retry_after_seconds,
            "retry_after_as_date": self.retry_after_as_date,
        }


def parse_fault_kinds(text: str) -> dict[str, float]:
    """Parse ``500,502,reset`` or ``500=2,reset=1`` (the ``--fault-kinds`` syntax).

    Raises ``ValueError`` for an unknown kind, a bad weight or an empty list.
    """
    weights: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        kind, equals, weight = part.partition("=")
        kind = kind.strip()
        try:
            weights[kind] = float(weight) if equals else 1.0
        except ValueError:
            raise ValueError(f"bad weight {weight!r} for fault kind {kind!r}") from None
    if not weights:
        raise ValueError("no fault kind given")
    return _normalise_kinds(weights, EVERY_FAULT_KIND, "fault kinds")


class FaultPicker:
    """One channel's fault generator: a :class:`random.Random` drawn once per request.

    Not thread-safe: :class:`~airflow_provider_packly.sandbox.state.SandboxState` calls
    :meth:`draw` under its lock, in arrival order.
    """

    def __init__(self, seed: int | str, rate: float, weights: tuple[tuple[str, float], ...]) -> None:
        self._random = random.Random(seed)
        self._rate = rate
        self._weights = tuple((kind, weight) for kind, weight in weights if weight > 0)
        self._total = sum(weight for _, weight in self._weights)
        self._count_503 = 0

    def draw(self) -> tuple[str, bool]:
        """Return ``(kind, retry_after)`` for the next request; ``kind`` may be ``"none"``.

        Exactly one random number is consumed per call, whatever the outcome: a number
        ``u < rate`` selects a fault, and ``u / rate`` then selects the kind by weight.
        ``retry_after`` is true for every 429 and for the even-numbered 503s (1st, 3rd, ...).
        """
        u = self._random.random()
        if not self._weights or u >= self._rate:
            return "none", False
        point = u / self._rate * self._total
        kind = self._weights[-1][0]  # guards against rounding at the top end
        for name, weight in self._weights:
            if point < weight:
                kind = name
                break
            point -= weight
        if kind == "503":
            retry_after = self._count_503 % 2 == 0
            self._count_503 += 1
            return kind, retry_after
        return kind, kind == "429"


@dataclass
class FaultDecision:
    """What was decided for one eligible request (kept in ``SandboxState.fault_log``).

    * ``seq``: arrival index among eligible requests of both channels, from 0;
    * ``channel``: ``"api"`` (Packly API and sandbox writes) or ``"token"``;
    * ``kind``: one of :data:`FAULT_KINDS`, or ``"none"``;
    * ``retry_after``: whether the status fault carries ``Retry-After``;
    * ``write_key`` / ``write_applied``: for ``POST /_sandbox/v1/writes``, the key (once the
      endpoint has read the body, ``None`` if it had none) and whether the write was applied
      (``False`` until it is); both ``None`` for any other request;
    * ``config``: the :class:`FaultConfig` in force when it was decided (``None``: off), so
      a ``set_faults`` call during the request does not change how it is answered.
    """

    seq: int
    channel: Channel
    method: str
    path: str
    kind: str
    retry_after: bool
    write_key: str | None = None
    write_applied: bool | None = None
    config: FaultConfig | None = field(default=None, repr=False, compare=False)

    @property
    def rejects_before_processing(self) -> bool:
        """Whether the fault says "not processed" (429, or 503 with ``Retry-After``).

        An endpoint with side effects must then apply none: a client may safely resend.
        """
        return self.kind == "429" or (self.kind == "503" and self.retry_after)

    @property
    def is_write(self) -> bool:
        """Whether this is a ``POST`` to the sandbox write endpoint."""
        return self.method == "POST" and self.path == WRITES_PATH


def fault_channel(path: str) -> Channel | None:
    """Which fault channel ``path`` belongs to, or ``None`` if it is never faulted."""
    if path == TOKEN_PATH:
        return "token"
    if path == WRITES_PATH or path.startswith((API_PREFIX, WRITES_PATH + "/")):
        return "api"
    return None


def fault_decision(scope: Scope) -> FaultDecision | None:
    """The :class:`FaultDecision` of the request with ``scope``, if it was eligible."""
    decision = scope.get(FAULT_SCOPE_KEY)
    return decision if isinstance(decision, FaultDecision) else None


# -- rendering -------------------------------------------------------------------------------------
_HTML_PAGES: dict[int, str] = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
}


def _echo_page(request: Request) -> Response:
    """A 502 page quoting the request and its headers, credentials included (the ``echo`` fault)."""
    quoted = "\r\n".join(f"{name}: {value}" for name, value in request.headers.items())
    body = (
        "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
        f"<p>upstream failed for:</p><pre>{request.method} {request.url.path}\r\n{quoted}</pre></body></html>"
    )
    return Response(body, status_code=502, media_type="text/html")


def _html_page(status: int) -> Response:
    """An HTML error page such as a reverse proxy (nginx) sends instead of the API's JSON."""
    title = _HTML_PAGES[status]
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Response(body, status_code=status, media_type="text/html")


#: The status faults answered with Packly's JSON envelope: kind -> (status, code, message,
#: whether ``Retry-After`` is sent). A 503 uses it only when it carries ``Retry-After``.
_ENVELOPE_FAULTS: dict[str, tuple[int, str, str, bool]] = {
    "500": (500, "INTERNAL_SERVER_ERROR", "Internal server error", False),
    "503": (503, "SERVICE_UNAVAILABLE", "The service is unavailable; the request was not processed", True),
    "429": (429, "TOO_MANY_REQUESTS", "Too many requests; the request was not processed", True),
}


def status_fault_response(request: Request, decision: FaultDecision, config: FaultConfig) -> Response:
    """The complete response of a status fault (``500``, ``502``, ``503``, ``429``).

    The envelope codes ``TOO_MANY_REQUESTS`` and ``SERVICE_UNAVAILABLE`` are not documented
    by Packly; the sandbox's choice. Messages say the fault was injected, for debugging.
    """
    kind = decision.kind
    if kind == "echo":
        return _echo_page(request)
    if kind == "502":
        return _html_page(502)
    if kind == "503" and not decision.retry_after:
        return _html_page(503)
    if kind not in _ENVELOPE_FAULTS:
        raise ValueError(f"{kind!r} is not a status fault")
    status, code, message, retry_after = _ENVELOPE_FAULTS[kind]
    headers = {"Retry-After": config.retry_after_value()} if retry_after else None
    error = EnvelopeError(status, code, f"{message} (injected fault)", headers=headers)
    return json_response(request, envelope(request, error), error.http_status_code, error.headers)


# -- aborted connections ---------------------------------------------------------------------------
#: Set in the request's task when the injector leaves a response incomplete on purpose.
_DELIBERATE_ABORT: ContextVar[bool] = ContextVar("packly_sandbox_deliberate_abort", default=False)


class _HideDeliberateAborts(logging.Filter):
    """Drop uvicorn's "returned without completing response" error for injected faults only.

    uvicorn logs that line, then closes the connection, when an app returns with a response
    incomplete: exactly how ``reset`` and ``truncated`` are produced. The flag is a context
    variable of the request's own task, so real bugs elsewhere are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_DELIBERATE_ABORT.get() and "without completing response" in str(record.msg))


_ABORT_FILTER = _HideDeliberateAborts()


def _mark_deliberate_abort() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _ABORT_FILTER not in logger.filters:
        logger.addFilter(_ABORT_FILTER)
    _DELIBERATE_ABORT.set(True)


async def _run_captured(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
    """Run ``app`` to completion and return its ``http.response.start`` message and body."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    if start is None:
        raise RuntimeError("the endpoint returned without starting a response")
    return start, b"".join(chunks)


async def _send_incomplete(send: Send, start: Message, body: bytes, sent: int) -> None:
    """Send ``start`` declaring ``Content-Length > sent``, then ``body[:sent]``, then give up.

    Returning with the response incomplete makes uvicorn close the connection, so the
    client reads fewer bytes than declared and fails with a transport error.
    """
    declared = max(len(body), sent + 1)
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(declared).encode("ascii")))
    await send({**start, "headers": headers})
    if sent:
        await send({"type": "http.response.body", "body": body[:sent], "more_body": True})
    _mark_deliberate_abort()


async def _send_trickled(send: Send, receive: Receive, start: Message, body: bytes, every: float) -> None:
    """Send ``start``, then ``body`` one byte per ``every`` seconds, until done or the client leaves."""
    await send(start)
    for index in range(len(body)):
        last = index == len(body) - 1
        await send({"type": "http.response.body", "body": body[index : index + 1], "more_body": not last})
        if not last and await _client_left_within(receive, every):
            _mark_deliberate_abort()
            return
    if not body:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_cut_gzip(send: Send, start: Message, body: bytes) -> None:
    """Send ``body`` gzipped with its tail (the trailer at least) cut off, framed as complete."""
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    if not any(k.lower() == b"content-encoding" and v.strip().lower() == b"gzip" for k, v in headers):
        headers = [(k, v) for k, v in headers if k.lower() != b"content-encoding"]
        headers.append((b"content-encoding", b"gzip"))
        body = gzip.compress(body, mtime=0)
    cut = body[: max(1, len(body) - max(9, len(body) // 10))]
    headers.append((b"content-length", str(len(cut)).encode("ascii")))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": cut, "more_body": False})


async def _client_left_within(receive: Receive, seconds: float) -> bool:
    """Wait up to ``seconds``; return whether the client disconnected meanwhile."""
    with anyio.move_on_after(seconds):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return True
    return False


class FaultLedger(Protocol):
    """What the fault middleware needs of the sandbox's state (``SandboxState`` provides it).

    A protocol, so that this module does not depend on the state module, which depends on it.
    """

    def decide_fault(self, channel: Channel, method: str, path: str) -> FaultDecision:
        """Draw and record the fault for one eligible request."""
        ...

    def count_token_request(self) -> None:
        """Record one POST to the token endpoint."""
        ...

    def force_revocation(self) -> int:
        """Revoke every token for a ``revoke`` fault."""
        ...


class FaultInjectionMiddleware:
    """ASGI middleware applying the state's :class:`FaultConfig` to eligible requests.

    Every eligible request gets a :class:`FaultDecision` (``"none"`` included, and also when
    no faults are configured), stored in its scope under :data:`FAULT_SCOPE_KEY`. API and
    write requests always reach their endpoint, which runs to completion; a fault then
    replaces, delays, cuts or follows its response. Token faults are answered instead of
    the token endpoint.
    """

    def __init__(self, app: ASGIApp, state: FaultLedger) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        channel = fault_channel(scope["path"]) if scope["type"] == "http" else None
        if channel is None:
            await self.app(scope, receive, send)
            return
        decision = self.state.decide_fault(channel, scope["method"], scope["path"])
        scope[FAULT_SCOPE_KEY] = decision
        config = decision.config
        kind = decision.kind
        if config is None or kind == "none":
            await self.app(scope, receive, send)
            return
        if channel == "token":
            # Answered before the endpoint: no token is issued, but the request is counted.
            self.state.count_token_request()
            await status_fault_response(Request(scope), decision, config)(scope, receive, send)
            return
        if kind == "revoke":
            await self.app(scope, receive, self._revoking(send))
            return
        start, body = await _run_captured(self.app, scope, receive)
        if kind in RESPONSE_FAULT_KINDS:
            await status_fault_response(Request(scope), decision, config)(scope, receive, send)
        elif kind == "reset":
            await _send_incomplete(send, start, body, 0)
        elif kind == "truncated":
            await _send_incomplete(send, start, body, len(body) // 2)
        elif kind == "trickle":
            await _send_trickled(send, receive, start, body, config.trickle_seconds)
        elif kind == "truncated-gzip":
            await _send_cut_gzip(send, start, body)
        elif kind == "slow":
            if not await _client_left_within(receive, config.slow_seconds):
                await send(start)
                await send({"type": "http.response.body", "body": body, "more_body": False})
        else:  # pragma: no cover - FaultConfig only admits FAULT_KINDS
            raise AssertionError(f"unhandled fault kind {kind!r}")

    def _revoking(self, send: Send) -> Send:
        """Wrap ``send`` to revoke every token just before the response's last body bytes.

        Revoking before they leave (rather than after) guarantees the client cannot send its
        next request, with the same token, before the revocation.
        """

        async def revoking_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.state.force_revocation()
            await send(message)

        return revoking_send
