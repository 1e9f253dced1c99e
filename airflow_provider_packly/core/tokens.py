"""Packly access tokens, the pure rules: how one is requested and read, and how a cache decides.

No I/O, no Airflow import (httpx only for its request and response types): the sync and
async paths in ``auth`` and the hook share every rule here, and tests run them without a
network.

* ``build_token_request`` / ``parse_token_response``: the token request as Packly documents
  it, and its answer read into an ``AccessToken`` or a ``PacklyAuthError`` saying why not;
* ``TokenSlots``: the state of a process-wide token cache, with single-flight fetching. A
  caller *claims* a key: it gets a usable token, or leads the one fetch in flight, or waits on
  it; the leader *settles* the flight with a token or a failure, or (an early refresh that
  failed while the cached token is still valid) *falls back* on that token with a back-off.
  The guard is a ``threading.Lock`` held only to read or swap a slot (never across I/O) and a
  ``concurrent.futures.Future`` per flight, which threads and event loops alike can wait on.
  Running a fetch and waiting for one is ``auth.TokenCache``'s part.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import math
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import REDACT_EXTENSION, PacklyAuthError, Redactor, read_error_body
from airflow_provider_packly.retries import IDEMPOTENT_EXTENSION, SINGLE_ATTEMPT_EXTENSION, attempts_made

__all__ = [
    "MAX_TOKEN_LIFETIME",
    "MAX_TOKEN_RESPONSE_BYTES",
    "REFRESH_BACKOFF_SECONDS",
    "AccessToken",
    "TokenSlots",
    "basic_authorization",
    "build_token_request",
    "connection_redactor",
    "parse_token_response",
    "refresh_backoff",
]

_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"
#: A token response is a few hundred bytes; a much larger one is not from a token endpoint.
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A bearer token and when to stop using it, on the monotonic clock.

    ``refresh_at`` comes ``margin`` seconds before ``expires_at``, but never earlier than
    half-way through the token's life, so that short-lived tokens are still used.
    """

    value: str = field(repr=False)
    lifetime: float
    obtained_at: float
    refresh_at: float
    expires_at: float

    def needs_refresh(self, now: float) -> bool:
        return now >= self.refresh_at

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    @property
    def authorization(self) -> str:
        return "Bearer " + self.value

    def __repr__(self) -> str:
        return f"AccessToken(<redacted>, lifetime={self.lifetime:g}s)"


def basic_authorization(connection: PacklyConnection) -> str:
    """The ``Authorization: Basic`` value for the token request (client ID and secret as sent)."""
    pair = f"{connection.client_id}:{connection.client_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def build_token_request(connection: PacklyConnection, *, single_attempt: bool = False) -> httpx.Request:
    """``POST /v1/oauth2/token`` exactly as Packly's authentication page shows it.

    ``single_attempt``: send it once, without the retry policy's retries (an early refresh).
    """
    body = urlencode({"grant_type": "client_credentials", "scope": connection.scope}).encode()
    request = httpx.Request(
        "POST",
        connection.token_url,
        headers={
            "Authorization": basic_authorization(connection),
            "Content-Type": _FORM_CONTENT_TYPE,
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
        },
        content=body,
        # Retrying a token request is harmless: at worst Packly issues a second token.
        extensions={IDEMPOTENT_EXTENSION: True, REDACT_EXTENSION: connection_redactor(connection)},
    )
    if single_attempt:
        request.extensions[SINGLE_ATTEMPT_EXTENSION] = True
    return request


def connection_redactor(connection: PacklyConnection) -> Redactor:
    """The connection's secrets (client secret, Basic value), to remove from any quoted body."""
    basic = basic_authorization(connection)
    return Redactor(connection.client_secret, basic, basic.split(" ", 1)[1])


#: A token lifetime above this is used as this: refreshing a "never expiring" token once in a
#: while is harmless, and the monotonic arithmetic stays exact. Packly documents no maximum.
MAX_TOKEN_LIFETIME = 10 * 365 * 24 * 3600.0


def parse_token_response(connection: PacklyConnection, response: httpx.Response, now: float) -> AccessToken:
    """Read a token response into an ``AccessToken`` or raise ``PacklyAuthError`` saying why.

    ``now`` is the monotonic time the request was sent, so the lifetime is never overstated.

    The body is read in ``_read_token`` and only its verdict comes back here: an error is
    raised from a frame that never held the token document or the token, so a traceback
    printed with its locals (pytest ``--showlocals``, Sentry) cannot show them.
    """
    outcome = _read_token(connection, response)
    if isinstance(outcome, _Refusal):
        raise PacklyAuthError(
            connection_redactor(connection)(outcome.reason),
            environment=connection.environment,
            client_id=connection.client_id,
            token_url=connection.token_url,
            http_status=response.status_code,
            code=outcome.code,
        )
    value, lifetime = outcome
    margin = min(connection.token_refresh_margin, lifetime / 2)
    return AccessToken(
        value=value,
        lifetime=lifetime,
        obtained_at=now,
        refresh_at=now + lifetime - margin,
        expires_at=now + lifetime,
    )


@dataclass(frozen=True)
class _Refusal:
    """Why a token response cannot be used (no token in it, ever)."""

    reason: str
    code: str | None = None


def _read_token(connection: PacklyConnection, response: httpx.Response) -> tuple[str, float] | _Refusal:
    """The token and its lifetime, or a ``_Refusal``; never raises (see ``parse_token_response``)."""
    content_type = response.headers.get("content-type", "")
    attempts = attempts_made(response)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if not response.is_success:
        body = read_error_body(response.content, content_type, connection_redactor(connection))
        if body.unreadable:
            return _Refusal(
                f"HTTP {response.status_code}{tries}; {body.unreadable}. {_status_hint(response.status_code)}"
            )
        said = f"{body.code or 'error'}: {body.message or '(no message)'}"
        if body.items:
            said += " (" + "; ".join(str(item) for item in body.items) + ")"
        return _Refusal(
            f"HTTP {response.status_code}{tries}, Packly said {said}. {_status_hint(response.status_code)}",
            code=body.code,
        )

    # A 2xx body may hold a token in an unexpected shape: describe it, never quote it.
    if len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
        return _Refusal(  # the I/O shell stops reading just past the limit
            f"the token response was over {MAX_TOKEN_RESPONSE_BYTES:,} bytes, far more than a token response; "
            "check that the Base URL points at the Packly API"
        )
    try:
        document = json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        kind = content_type.split(";")[0].strip() or "no content type"
        return _Refusal(
            f"the token response (HTTP {response.status_code}, {kind}, {len(response.content)} bytes) "
            "was not JSON; check that the Base URL points at the Packly API"
        )
    if not isinstance(document, dict):
        return _Refusal(f"the token response was JSON but not an object ({type(document).__name__})")

    token_type = document.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        if token_type is None:
            shown = "is missing"
        elif isinstance(token_type, str) and len(token_type) <= 20 and token_type.isprintable():
            shown = repr(token_type)
        else:
            shown = f"a {type(token_type).__name__}"
        return _Refusal(f"the token response's token_type {shown}; only 'bearer' tokens are supported")
    value = document.get("access_token")
    if not isinstance(value, str) or not value:
        what = "missing" if value is None else ("empty" if value == "" else f"not a string ({type(value).__name__})")
        return _Refusal(f"the token response's access_token is {what}")
    if not _is_header_token(value):
        # It could never be sent: httpx would fail on every call, quoting it in its message.
        return _Refusal(
            "the token response's access_token holds characters that cannot be sent in an HTTP header "
            "(only visible ASCII is allowed); check that the Base URL points at the Packly API"
        )
    lifetime = _read_expires_in(document.get("expires_in", None), connection)
    if isinstance(lifetime, _Refusal):
        return lifetime
    return value, lifetime


def _is_header_token(value: str) -> bool:
    """Whether ``value`` can follow ``Bearer `` in a header: visible ASCII only (RFC 9110 5.5, RFC 6750 2.1)."""
    return value.isascii() and all("!" <= ch <= "~" for ch in value)


def _read_expires_in(raw: Any, connection: PacklyConnection) -> float | _Refusal:
    """``expires_in`` in seconds: a JSON number or a string of ASCII digits, above 0.

    A lifetime above ``MAX_TOKEN_LIFETIME`` (however many digits) is used as that maximum.
    """
    if raw is None:
        return float(connection.default_expires_in)
    if isinstance(raw, bool):
        return _Refusal(f"the token response's expires_in is {raw!r}, not a number of seconds")
    if isinstance(raw, str):
        text = raw.strip()
        if not (text.isascii() and text.replace(".", "", 1).isdigit()):
            shown = repr(raw[:20]) if raw.isprintable() else "a text with control characters"
            return _Refusal(f"the token response's expires_in is {shown}, not a number of seconds")
        raw = float(text) if "." in text else int(text)
    if not isinstance(raw, (int, float)):
        return _Refusal(f"the token response's expires_in is a {type(raw).__name__}, not a number of seconds")
    if isinstance(raw, float) and math.isnan(raw):
        return _Refusal("the token response's expires_in is NaN, not a number of seconds")
    if raw <= 0:
        shown = f"{raw:g}" if isinstance(raw, float) else (str(raw) if raw > -(10**20) else "a huge negative number")
        return _Refusal(f"the token response's expires_in is {shown}; a token must live for more than 0 seconds")
    return MAX_TOKEN_LIFETIME if raw >= MAX_TOKEN_LIFETIME else float(raw)


def _status_hint(status: int) -> str:
    if status in (400, 401, 403):
        return "Check the connection's client ID and secret, and that they belong to this environment."
    if status == 404:
        return "Check the connection's Base URL: no token endpoint was found there."
    if status == 429:
        return "Packly is rate limiting token requests; retry later."
    if status >= 500:
        return "Packly's token endpoint failed; retry later."
    return "Check the connection's settings."


@dataclass
class _Slot:
    token: AccessToken | None = None
    flight: concurrent.futures.Future[AccessToken] | None = None
    #: After a failed early refresh: no new attempt before this time (the valid token is used).
    retry_at: float = -math.inf
    #: Early refreshes of ``token`` that failed in a row.
    failures: int = 0


@dataclass(frozen=True)
class _Claim:
    """What a caller should do: use ``token``, or lead the fetch ``flight``, or wait on it."""

    token: AccessToken | None = None
    flight: concurrent.futures.Future[AccessToken] | None = None
    lead: bool = False
    #: For a leader: the cached token, still valid, to fall back on if the refresh fails.
    fallback: AccessToken | None = None


#: The first wait after a failed early refresh, in seconds; it doubles with each failure.
REFRESH_BACKOFF_SECONDS = 5.0


def refresh_backoff(failures: int, seconds_left: float, base: float = REFRESH_BACKOFF_SECONDS) -> float:
    """How long to keep using a valid token before trying to refresh it again.

    ``base`` doubled per failure in a row, but at most half the token's remaining life, so that
    another attempt comes before it expires; never less than ``min(base, 1)`` second.
    """
    wait = min(base * 2.0 ** (failures - 1), seconds_left / 2)
    return max(wait, min(base, 1.0))


class TokenSlots:
    """The state of a token cache: one slot per key (token, fetch in flight, back-off).

    Every method takes the monotonic time ``now`` from its caller and does no I/O; the lock
    is held only to read or swap a slot.
    """

    def __init__(self, refresh_backoff_seconds: float = REFRESH_BACKOFF_SECONDS) -> None:
        """:param refresh_backoff_seconds: the first wait after a failed early refresh (``refresh_backoff``)."""
        self._refresh_backoff = refresh_backoff_seconds
        self._lock = threading.Lock()
        self._slots: dict[Hashable, _Slot] = {}

    def _forget_flights_after_fork(self) -> None:
        """In a forked child: the threads leading fetches did not survive the fork, so their
        flights would never end; forget them (tokens already cached stay valid). The lock may
        have been held by one of those threads."""
        self._lock = threading.Lock()
        for slot in self._slots.values():
            slot.flight = None

    def clear(self) -> None:
        """Forget every token (tests; a credentials rotation)."""
        with self._lock:
            self._slots.clear()

    def peek(self, key: Hashable) -> AccessToken | None:
        with self._lock:
            slot = self._slots.get(key)
            return slot.token if slot else None

    def invalidate(self, key: Hashable, stale: AccessToken) -> None:
        """Drop ``stale`` if it is still the cached token (a newer one is kept)."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None and slot.token is stale:
                slot.token = None

    def _fresh(self, key: Hashable, now: float) -> AccessToken | None:
        """The cached token if it is not yet due for refresh; lock-free (the usual case).

        Reading a dict entry and a slot's attribute is atomic, and a token never changes.
        """
        slot = self._slots.get(key)
        token = slot.token if slot is not None else None
        if token is not None and not token.needs_refresh(now):
            return token
        return None

    def _claim(self, key: Hashable, now: float) -> _Claim:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            token = slot.token
            if token is not None and not token.needs_refresh(now):
                return _Claim(token=token)
            valid = token if token is not None and not token.is_expired(now) else None
            if valid is not None and (slot.flight is not None or now < slot.retry_at):
                # Inside the refresh margin, a refresh in flight or backing off: keep using it.
                return _Claim(token=valid)
            if slot.flight is not None:
                return _Claim(flight=slot.flight)
            slot.flight = concurrent.futures.Future()
            return _Claim(flight=slot.flight, lead=True, fallback=valid)

    def _settle(
        self, key: Hashable, flight: concurrent.futures.Future[AccessToken], outcome: AccessToken | BaseException
    ) -> None:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            if slot.flight is flight:
                slot.flight = None
            if isinstance(outcome, AccessToken):
                slot.token = outcome
                slot.failures, slot.retry_at = 0, -math.inf
        if isinstance(outcome, AccessToken):
            flight.set_result(outcome)
        else:
            flight.set_exception(outcome)

    def _fall_back(
        self, key: Hashable, flight: concurrent.futures.Future[AccessToken], fallback: AccessToken, now: float
    ) -> float | None:
        """After a failed early refresh: keep ``fallback`` if it is still valid, and back off.

        Returns the back-off in seconds if it was kept (the flight then ends with it), else
        ``None`` (the caller settles the flight with its failure).
        """
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            if fallback.is_expired(now) or slot.token is not fallback:
                return None
            if slot.flight is flight:
                slot.flight = None
            slot.failures += 1
            wait = refresh_backoff(slot.failures, fallback.expires_at - now, self._refresh_backoff)
            slot.retry_at = now + wait
        flight.set_result(fallback)
        return wait
