"""The ``packly`` connection type: its settings, parsed and checked once.

``PacklyConnection`` is plain data with no Airflow import, so the token cache, the auth flow
and the tests can use it without Airflow. ``PacklyConnection.from_airflow`` reads an Airflow
``Connection`` (from the metadata DB, a secrets backend or an ``AIRFLOW_CONN_*`` variable).

Where Packly's documentation is silent (the sandbox host, the token lifetime when
``expires_in`` is missing) the value is a setting with a stated default, never a fact.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from airflow_provider_packly.exceptions import PacklyConnectionConfigError

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "DEFAULT_TOKEN_REFRESH_MARGIN",
    "DEFAULT_TIMEOUT",
    "ENVIRONMENTS",
    "LIVE_BASE_URL",
    "PacklyConnection",
]

#: The documented live host (from Packly's example request).
LIVE_BASE_URL = "https://api.packly.io"
ENVIRONMENTS = ("sandbox", "live")
DEFAULT_SCOPE = "external"
#: Seconds a call may take (connect, read, write and pool wait alike).
DEFAULT_TIMEOUT = 30.0
#: Refresh a token this many seconds before Packly says it expires.
DEFAULT_TOKEN_REFRESH_MARGIN = 60.0
#: Lifetime assumed when a token response has no ``expires_in``. Packly documents the field
#: but not a default; five minutes keeps a wrong guess cheap (a 401 also forces a refresh).
DEFAULT_EXPIRES_IN = 300

DEFAULT_RETRY_MAX_ATTEMPTS = 5
DEFAULT_RETRY_MAX_SECONDS = 60.0
DEFAULT_RETRY_BACKOFF_SECONDS = 0.5
DEFAULT_RETRY_BACKOFF_MAX_SECONDS = 15.0
#: Packly documents no rate limits; a longer Retry-After than this is cut to it.
DEFAULT_RETRY_AFTER_MAX_SECONDS = 60.0

TOKEN_PATH = "/v1/oauth2/token"


@dataclass(frozen=True)
class PacklyConnection:
    """Everything the hook needs to talk to one Packly environment.

    The client secret is kept out of ``repr()`` and comparisons print nothing; use
    ``secret_digest`` to tell two secrets apart without holding them side by side.
    """

    client_id: str
    client_secret: str = field(repr=False)
    environment: str = "sandbox"
    base_url: str = LIVE_BASE_URL
    scope: str = DEFAULT_SCOPE
    timeout: float = DEFAULT_TIMEOUT
    token_refresh_margin: float = DEFAULT_TOKEN_REFRESH_MARGIN
    default_expires_in: int = DEFAULT_EXPIRES_IN
    #: Per-phase timeouts; ``None`` means ``timeout``.
    connect_timeout: float | None = None
    read_timeout: float | None = None
    write_timeout: float | None = None
    pool_timeout: float | None = None
    retry_max_attempts: int = DEFAULT_RETRY_MAX_ATTEMPTS
    retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS
    retry_backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
    retry_backoff_max_seconds: float = DEFAULT_RETRY_BACKOFF_MAX_SECONDS
    retry_after_max_seconds: float = DEFAULT_RETRY_AFTER_MAX_SECONDS
    conn_id: str | None = None
    #: The longest one call may take, retries and body included; ``None``: derived (see
    #: ``request_deadline``).
    request_deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        where = f"Packly connection {self.conn_id!r}" if self.conn_id else "The Packly connection"
        if not self.client_id or not self.client_id.strip():
            raise PacklyConnectionConfigError(
                f"{where} has no client ID: put the Packly client ID in the connection's Client ID (login) field."
            )
        if not self.client_secret:
            raise PacklyConnectionConfigError(
                f"{where} has no client secret: put the Packly client secret in the connection's "
                "Client Secret (password) field."
            )
        if self.environment not in ENVIRONMENTS:
            raise PacklyConnectionConfigError(
                f"{where} has environment {self.environment!r}; use 'sandbox' or 'live'."
            )
        object.__setattr__(self, "base_url", _checked_base_url(self.base_url, where))
        if not self.scope:
            raise PacklyConnectionConfigError(f"{where} has an empty scope; leave it unset to use 'external'.")
        _check_positive(self.timeout, "timeout", where)
        if self.token_refresh_margin < 0:
            raise PacklyConnectionConfigError(
                f"{where} has token_refresh_margin {self.token_refresh_margin}; use 0 or more seconds."
            )
        _check_positive(self.default_expires_in, "default_expires_in", where)
        for name in ("connect_timeout", "read_timeout", "write_timeout", "pool_timeout"):
            if getattr(self, name) is not None:
                _check_positive(getattr(self, name), name, where)
        if self.retry_max_attempts < 1 or self.retry_max_attempts != int(self.retry_max_attempts):
            raise PacklyConnectionConfigError(
                f"{where} has retry_max_attempts {self.retry_max_attempts!r}; give a whole number, 1 or more "
                "(1 turns retries off)."
            )
        for name in ("retry_max_seconds", "retry_backoff_seconds", "retry_backoff_max_seconds", "retry_after_max_seconds"):
            if getattr(self, name) < 0:
                raise PacklyConnectionConfigError(f"{where} has {name} {getattr(self, name)!r}; use 0 or more seconds.")
        if self.request_deadline_seconds is not None:
            _check_positive(self.request_deadline_seconds, "request_deadline_seconds", where)

    def phase_timeouts(self) -> dict[str, float]:
        """Connect, read, write and pool timeouts in seconds (``timeout`` where unset)."""
        return {
            phase: value if value is not None else self.timeout
            for phase, value in (
                ("connect", self.connect_timeout),
                ("read", self.read_timeout),
                ("write", self.write_timeout),
                ("pool", self.pool_timeout),
            )
        }

    def request_deadline(self) -> float:
        """Seconds one call may take in all: connecting, sending, every retry and its wait, and
        reading the whole answer (token requests included).

        httpx bounds each wait (one read, one connect), never a whole call, so a server that
        trickles a byte per read could hold a call for hours. ``request_deadline_seconds`` when
        set; by default the retry time budget plus each phase's timeout once (pool, connect,
        write, read): the longest a call can take against a server that answers within its
        timeouts (180 s with the defaults).
        """
        if self.request_deadline_seconds is not None:
            return self.request_deadline_seconds
        return self.retry_max_seconds + sum(self.phase_timeouts().values())

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def secret_digest(self) -> str:
        """A digest of the client secret: tells secrets apart in cache keys without keeping them."""
        return hashlib.sha256(self.client_secret.encode()).hexdigest()

    @classmethod
    def from_fields(
        cls,
        *,
        login: str | None,
        password: str | None,
        host: str | None,
        extra: Mapping[str, Any],
        conn_id: str | None = None,
    ) -> PacklyConnection:
        """Build from an Airflow connection's fields; ``extra`` is its parsed JSON extra."""
        where = f"Packly connection {conn_id!r}" if conn_id else "The Packly connection"
        settings = _ExtraReader(extra, where)
        environment = settings.text("environment") or "sandbox"
        environment = environment.strip().lower()
        base_url = (host or "").strip()
        if not base_url:
            if environment == "live":
                base_url = LIVE_BASE_URL
            elif environment == "sandbox":
                raise PacklyConnectionConfigError(
                    f"{where} uses the sandbox environment but has no Base URL (host). Packly does not "
                    "document its sandbox host: set the Base URL to the address Packly gave you, or to a "
                    "local sandbox such as http://127.0.0.1:8089 (started with 'packly-sandbox')."
                )
        return cls(
            client_id=(login or "").strip(),
            client_secret=password or "",
            environment=environment,
            base_url=base_url,
            scope=settings.text("scope") or DEFAULT_SCOPE,
            timeout=settings.number("timeout", DEFAULT_TIMEOUT),
            token_refresh_margin=settings.number("token_refresh_margin", DEFAULT_TOKEN_REFRESH_MARGIN),
            default_expires_in=int(settings.number("default_expires_in", DEFAULT_EXPIRES_IN)),
            connect_timeout=settings.optional_number("connect_timeout"),
            read_timeout=settings.optional_number("read_timeout"),
            write_timeout=settings.optional_number("write_timeout"),
            pool_timeout=settings.optional_number("pool_timeout"),
            retry_max_attempts=settings.whole_number("retry_max_attempts", DEFAULT_RETRY_MAX_ATTEMPTS),
            retry_max_seconds=settings.number("retry_max_seconds", DEFAULT_RETRY_MAX_SECONDS),
            retry_backoff_seconds=settings.number("retry_backoff_seconds", DEFAULT_RETRY_BACKOFF_SECONDS),
            retry_backoff_max_seconds=settings.number("retry_backoff_max_seconds", DEFAULT_RETRY_BACKOFF_MAX_SECONDS),
            retry_after_max_seconds=settings.number("retry_after_max_seconds", DEFAULT_RETRY_AFTER_MAX_SECONDS),
            conn_id=conn_id,
            request_deadline_seconds=settings.optional_number("request_deadline_seconds"),
        )

    @classmethod
    def from_airflow(cls, connection: Any) -> PacklyConnection:
        """Build from an ``airflow.sdk.Connection`` (duck-typed: no Airflow import here)."""
        return cls.from_fields(
            login=connection.login,
            password=connection.password,
            host=connection.host,
            extra=connection.extra_dejson or {},
            conn_id=connection.conn_id,
        )


class _ExtraReader:
    """Reads a connection's extra fields, as the UI stores them (``scope``) or with the legacy
    ``extra__packly__scope`` prefix, treating empty strings from the form as unset."""

    def __init__(self, extra: Mapping[str, Any], where: str) -> None:
        self._extra = extra
        self._where = where

    def _raw(self, name: str) -> Any:
        for key in (name, f"extra__packly__{name}"):
            value = self._extra.get(key)
            if value is not None and value != "":
                return value
        return None

    def text(self, name: str) -> str | None:
        value = self._raw(name)
        return None if value is None else str(value)

    def optional_number(self, name: str) -> float | None:
        return None if self._raw(name) is None else self.number(name, 0.0)

    def whole_number(self, name: str, default: int) -> int:
        number = self.number(name, default)
        if number != int(number):
            raise PacklyConnectionConfigError(
                f"{self._where} has {name} = {self._raw(name)!r} in its extra fields; give a whole number."
            )
        return int(number)

    def number(self, name: str, default: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            value = "true" if value else "false"
        try:
            return float(value)
        except (TypeError, ValueError):
            raise PacklyConnectionConfigError(
                f"{self._where} has {name} = {value!r} in its extra fields; give a number."
            ) from None


def _check_positive(value: float, name: str, where: str) -> None:
    if not value > 0:
        raise PacklyConnectionConfigError(f"{where} has {name} = {value!r}; give a number of seconds above 0.")


def _checked_base_url(raw: str, where: str) -> str:
    text = raw.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacklyConnectionConfigError(
            f"{where} has Base URL {raw!r}, which is not an http(s) URL; use e.g. {LIVE_BASE_URL}."
        )
    if parts.username or parts.password:
        raise PacklyConnectionConfigError(
            f"{where} has credentials inside its Base URL; put them in the Client ID and Client Secret fields."
        )
    if parts.query or parts.fragment:
        raise PacklyConnectionConfigError(
            f"{where} has a query or fragment in its Base URL {raw!r}; give only scheme, host, port and path."
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise PacklyConnectionConfigError(
            f"{where} has Base URL {raw!r}: plain http would send the client secret unencrypted. "
            "Use https, or http only to a local sandbox on this machine (127.0.0.1, localhost, ::1)."
        )
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        # The provider adds /v1/... itself; a base URL copied with it would double it.
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
