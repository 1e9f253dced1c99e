"""The ``packly`` connection type: its settings, their defaults, parsed and checked once.

``PacklyConnection`` is plain data with no Airflow import, so the token cache, the auth flow
and the tests can use it without Airflow. ``PacklyConnection.from_airflow`` reads an Airflow
``Connection`` (from the metadata DB, a secrets backend or an ``AIRFLOW_CONN_*`` variable).

Every default is written here once: ``RetryPolicy`` takes its field defaults from these
constants and ``get_provider_info`` (the connection form) imports them, which is why this
module imports neither Airflow nor httpx. ``airflow_provider_packly.connection`` re-exports it.

Where Packly's documentation is silent (the sandbox host, the token lifetime when
``expires_in`` is missing) the value is a setting with a stated default, never a fact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_packly.core.errors import PacklyConnectionConfigError

__all__ = [
    "DEFAULT_ENVIRONMENT",
    "DEFAULT_EXPIRES_IN",
    "DEFAULT_REQUEST_DEADLINE",
    "DEFAULT_RETRY_AFTER_MAX_SECONDS",
    "DEFAULT_RETRY_BACKOFF_MAX_SECONDS",
    "DEFAULT_RETRY_BACKOFF_SECONDS",
    "DEFAULT_RETRY_MAX_ATTEMPTS",
    "DEFAULT_RETRY_MAX_SECONDS",
    "DEFAULT_SCOPE",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN_REFRESH_MARGIN",
    "DEFAULT_VERIFY_TLS",
    "ENVIRONMENTS",
    "LIVE_BASE_URL",
    "MAX_SETTING",
    "PHASES",
    "RETRY_SETTINGS",
    "TOKEN_PATH",
    "PacklyConnection",
    "TlsSettings",
    "check_retry_settings",
]

#: The documented live host (from Packly's example request).
LIVE_BASE_URL = "https://api.packly.io"
ENVIRONMENTS = ("sandbox", "live")
#: Packly does not document a sandbox host, so the sandbox default also needs a Base URL.
DEFAULT_ENVIRONMENT = "sandbox"
#: The only scope Packly allows.
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
#: Check Packly's TLS certificate unless the connection turns it off (refused for live).
DEFAULT_VERIFY_TLS = True

#: The retry settings: each ``RetryPolicy`` field and the connection field (and extra) that sets it.
RETRY_SETTINGS = {
    "max_attempts": "retry_max_attempts",
    "max_seconds": "retry_max_seconds",
    "backoff": "retry_backoff_seconds",
    "backoff_max": "retry_backoff_max_seconds",
    "retry_after_max": "retry_after_max_seconds",
}
#: The phases httpx times separately; each has a ``<phase>_timeout`` setting (unset: ``timeout``).
PHASES = ("connect", "read", "write", "pool")
#: ``request_deadline()`` with every default: the retry budget plus each phase's timeout once.
DEFAULT_REQUEST_DEADLINE = DEFAULT_RETRY_MAX_SECONDS + len(PHASES) * DEFAULT_TIMEOUT

TOKEN_PATH = "/v1/oauth2/token"
#: No number setting may exceed this (a year of seconds): a larger one is a typo or a unit
#: mix-up (milliseconds), and some would overflow the operating system's timers.
MAX_SETTING = 366 * 24 * 3600


@dataclass(frozen=True)
class TlsSettings:
    """How a connection checks Packly's TLS certificate and which client certificate it shows.

    Hashable: the hook keeps one ``ssl.SSLContext`` per distinct value per process.

    :param verify: check the server certificate (extra ``verify_tls``, default on).
    :param ca_bundle_path: a PEM file (or a directory of hashed certificates) with the CAs to
        trust instead of the default ones (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``).
    :param client_cert_path: a PEM client certificate, with its key unless ``client_key_path``.
    :param client_key_path: the client certificate's unencrypted PEM key.
    """

    verify: bool = DEFAULT_VERIFY_TLS
    ca_bundle_path: str | None = None
    client_cert_path: str | None = None
    client_key_path: str | None = None


@dataclass(frozen=True)
class PacklyConnection:
    """Everything the hook needs to talk to one Packly environment.

    The client secret is kept out of ``repr()`` and comparisons print nothing; use
    ``secret_digest`` to tell two secrets apart without holding them side by side.
    """

    client_id: str
    client_secret: str = field(repr=False)
    environment: str = DEFAULT_ENVIRONMENT
    base_url: str = LIVE_BASE_URL
    scope: str = DEFAULT_SCOPE
    timeout: float = DEFAULT_TIMEOUT
    #: Seconds before expiry to refresh a token; extra ``refresh_margin_seconds`` (an extra key
    #: with ``token`` in its name would be hidden by Airflow's secrets masker).
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
    #: Certificate checks and client certificate (extras ``verify_tls``, ``ca_bundle_path``,
    #: ``client_cert_path``, ``client_key_path``).
    tls: TlsSettings = TlsSettings()
    #: An HTTP(S) proxy for every call (extra ``gateway_url``: Airflow's masker hides any
    #: field named *proxy*). ``None``: httpx's environment variables apply (``HTTPS_PROXY``,
    #: ``NO_PROXY``...). It may hold ``user:password@``: never shown in ``repr()`` or messages.
    proxy_url: str | None = field(default=None, repr=False)
    #: The longest one call may take, retries and body included; ``None``: derived (see
    #: ``request_deadline``).
    request_deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        where = self.where
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
            raise PacklyConnectionConfigError(f"{where} has environment {self.environment!r}; use 'sandbox' or 'live'.")
        object.__setattr__(self, "base_url", _checked_base_url(self.base_url, where))
        if not self.scope:
            raise PacklyConnectionConfigError(f"{where} has an empty scope; leave it unset to use 'external'.")
        _check_numbers(self, where)
        _check_positive(self.timeout, "timeout", where)
        if self.token_refresh_margin < 0:
            raise PacklyConnectionConfigError(
                f"{where} has refresh_margin_seconds {self.token_refresh_margin}; use 0 or more seconds."
            )
        _check_positive(self.default_expires_in, "default_expires_in", where)
        for name in (f"{phase}_timeout" for phase in PHASES):
            if getattr(self, name) is not None:
                _check_positive(getattr(self, name), name, where)
        check_retry_settings(where, self.retry_settings(), shown=RETRY_SETTINGS)
        if self.request_deadline_seconds is not None:
            _check_positive(self.request_deadline_seconds, "request_deadline_seconds", where)
        _check_tls(self.tls, self.environment, where)
        if self.proxy_url is not None:
            _check_proxy_url(self.proxy_url, where)

    def retry_settings(self) -> dict[str, Any]:
        """This connection's retry settings, named as ``RetryPolicy``'s fields (``RETRY_SETTINGS``)."""
        return {policy_name: getattr(self, name) for policy_name, name in RETRY_SETTINGS.items()}

    @property
    def where(self) -> str:
        """How messages name this connection: by its id when known."""
        return _where(self.conn_id)

    @property
    def proxy_display(self) -> str | None:
        """The proxy as messages may show it: scheme, host and port, never its credentials."""
        if self.proxy_url is None:
            return None
        parts = urlsplit(self.proxy_url)
        port = f":{parts.port}" if parts.port else ""
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        return f"{parts.scheme}://{host}{port}"

    def phase_timeouts(self) -> dict[str, float]:
        """Connect, read, write and pool timeouts in seconds (``timeout`` where unset)."""
        phases: dict[str, float | None] = {phase: getattr(self, f"{phase}_timeout") for phase in PHASES}
        return {phase: self.timeout if value is None else value for phase, value in phases.items()}

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
        port: int | str | None = None,
        schema: str | None = None,
    ) -> PacklyConnection:
        """Build from an Airflow connection's fields; ``extra`` is its parsed JSON extra.

        ``host`` may be a full URL (the JSON form and the UI's Base URL) or a bare host name (a
        URI connection such as ``packly://id:secret@127.0.0.1:8089/http`` arrives split into
        ``host``, ``port`` and ``schema``). ``port`` 0 or ``None`` means no port (the UI sends 0
        for an empty port); ``schema`` is the scheme (``http``/``https``) for a bare host, as in
        Airflow's HTTP provider.
        """
        where = _where(conn_id)
        settings = _ExtraReader(extra, where)
        environment = settings.text("environment") or DEFAULT_ENVIRONMENT
        environment = environment.strip().lower()
        base_url = (host or "").strip()
        port_number = _port_number(port, where)
        scheme = _scheme_from_schema(schema, where)
        if not base_url:
            if port_number is not None or scheme is not None:
                raise PacklyConnectionConfigError(
                    f"{where} has a port or schema but no Base URL (host); set the host too, or put the "
                    "whole address in the Base URL, e.g. https://api.packly.io."
                )
            if environment == "live":
                base_url = LIVE_BASE_URL
            elif environment == "sandbox":
                raise PacklyConnectionConfigError(
                    f"{where} uses the sandbox environment but has no Base URL (host). Packly does not "
                    "document its sandbox host: set the Base URL to the address Packly gave you, or to a "
                    "local sandbox such as http://127.0.0.1:8089 (started with 'packly-sandbox')."
                )
        else:
            base_url = _join_host_port_scheme(base_url, port_number, scheme, where)
        return cls(
            client_id=(login or "").strip(),
            client_secret=password or "",
            environment=environment,
            base_url=base_url,
            scope=settings.text("scope") or DEFAULT_SCOPE,
            timeout=settings.number("timeout", DEFAULT_TIMEOUT),
            token_refresh_margin=settings.number("refresh_margin_seconds", DEFAULT_TOKEN_REFRESH_MARGIN),
            default_expires_in=settings.whole_number("default_expires_in", DEFAULT_EXPIRES_IN),
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
            tls=TlsSettings(
                verify=settings.boolean("verify_tls", DEFAULT_VERIFY_TLS),
                ca_bundle_path=_path_or_none(settings.text("ca_bundle_path")),
                client_cert_path=_path_or_none(settings.text("client_cert_path")),
                client_key_path=_path_or_none(settings.text("client_key_path")),
            ),
            proxy_url=(settings.text("gateway_url") or "").strip() or None,
        )

    @classmethod
    def from_airflow(cls, connection: Any, *, named: bool = True) -> PacklyConnection:
        """Build from an ``airflow.sdk.Connection`` (duck-typed: no Airflow import here).

        ``named=False`` keeps the connection id out of every message: Airflow's connection test
        (REST API and UI) runs on a copy stored under a random id that would only mislead.
        """
        return cls.from_fields(
            login=connection.login,
            password=connection.password,
            host=connection.host,
            extra=connection.extra_dejson or {},
            conn_id=connection.conn_id if named else None,
            port=getattr(connection, "port", None),
            schema=getattr(connection, "schema", None),
        )


def _where(conn_id: str | None) -> str:
    """How messages name a connection: by its id when known."""
    return f"Packly connection {conn_id!r}" if conn_id else "The Packly connection"


def check_retry_settings(where: str, values: Mapping[str, Any], *, shown: Mapping[str, str] | None = None) -> None:
    """The one check of the retry settings, for a connection's and for a ``RetryPolicy``'s.

    ``values`` are the settings by ``RetryPolicy``'s field names (``RETRY_SETTINGS``' keys);
    ``shown`` the names messages use instead (a connection's: ``retry_max_attempts``...).
    ``max_attempts`` is a whole number, 1 or more; the others are seconds, 0 or more and
    finite (NaN, which passes every ``<`` comparison, is refused too).
    """
    for key, value in values.items():
        name = (shown or {}).get(key, key)
        if key == "max_attempts":
            if not _is_number(value) or not value >= 1 or value != int(value):
                raise PacklyConnectionConfigError(
                    f"{where} has {name} {_shown(value)}; give a whole number, 1 or more (1 turns retries off)."
                )
        elif not _is_number(value) or not 0 <= value <= MAX_SETTING:
            raise PacklyConnectionConfigError(
                f"{where} has {name} {_shown(value)}; use 0 or more seconds, at most {MAX_SETTING:,}."
            )


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool), small enough to compare with a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and abs(value) <= MAX_SETTING
    except OverflowError:  # an int too large for a float
        return False


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

    def boolean(self, name: str, default: bool) -> bool:
        """A JSON boolean (the UI form's checkbox) or its usual spellings in a URI or env var."""
        value = self._raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise PacklyConnectionConfigError(
            f"{self._where} has {name} = {value!r} in its extra fields; give true or false."
        )

    def number(self, name: str, default: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            value = "true" if value else "false"
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if not math.isfinite(number) or abs(number) > MAX_SETTING:
            raise PacklyConnectionConfigError(
                f"{self._where} has {name} = {_shown(value)} in its extra fields; give a finite number"
                f" no larger than {MAX_SETTING:,}."
            )
        return number


def _shown(value: Any) -> str:
    """``repr(value)``, shortened: a setting may be a 400-digit number (whose repr may even fail)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**20:
        return "a number with more than 20 digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_numbers(connection: PacklyConnection, where: str) -> None:
    """Every number setting is a finite int or float no larger than ``MAX_SETTING``.

    Checked generically, field by field, so that NaN (which passes every ``<`` comparison)
    or an infinity never gets past the checks of particular settings.
    """
    for item in dataclasses.fields(connection):
        value = getattr(connection, item.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not _is_number(value):
            raise PacklyConnectionConfigError(
                f"{where} has {item.name} = {_shown(value)}; give a finite number no larger than {MAX_SETTING:,}."
            )


def _path_or_none(text: str | None) -> str | None:
    return (text or "").strip() or None


def _check_tls(tls: TlsSettings, environment: str, where: str) -> None:
    """Refuse TLS settings that cannot be what the user meant (the files are read later, by
    the hook, on the machine that makes the calls)."""
    if not tls.verify:
        if environment == "live":
            raise PacklyConnectionConfigError(
                f"{where} turns TLS certificate verification off (verify_tls = false) for the live "
                "environment; that is refused: anyone on the network path could read the client secret "
                "and tokens. If Packly is reached through a private CA or a TLS-inspecting proxy, set "
                "ca_bundle_path to that CA's PEM file instead."
            )
        if tls.ca_bundle_path:
            raise PacklyConnectionConfigError(
                f"{where} sets a CA bundle (ca_bundle_path) but turns verification off (verify_tls = "
                "false), which would ignore it; remove one of the two."
            )
    if tls.client_key_path and not tls.client_cert_path:
        raise PacklyConnectionConfigError(
            f"{where} has a client key (client_key_path) but no client certificate (client_cert_path); "
            "set the certificate too."
        )


def _check_proxy_url(url: str, where: str) -> None:
    """An http(s) proxy URL with a host; messages never repeat it (it may hold a password)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise PacklyConnectionConfigError(
            f"{where} has an HTTP(S) proxy (gateway_url) that is not an http:// or https:// URL with a host "
            "and a valid port; give e.g. http://proxy.example.com:3128 (user:password@ may precede the host)."
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PacklyConnectionConfigError(
            f"{where} has an HTTP(S) proxy (gateway_url) with a path, query or fragment; give only "
            "scheme, host and port, e.g. http://proxy.example.com:3128."
        )


def _check_positive(value: float, name: str, where: str) -> None:
    if not value > 0:
        raise PacklyConnectionConfigError(f"{where} has {name} = {_shown(value)}; give a number of seconds above 0.")


def _port_number(port: int | str | None, where: str) -> int | None:
    """The connection's ``port`` field as a number; ``None`` for unset, empty or 0 (no port)."""
    if port is None or (isinstance(port, str) and not port.strip()):
        return None
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = -1
    if isinstance(port, bool) or str(number) != str(port).strip():
        number = -1
    if number == 0:
        return None
    if not 1 <= number <= 65535:
        raise PacklyConnectionConfigError(
            f"{where} has port {port!r}; give a whole number from 1 to 65535, or leave the port empty."
        )
    return number


def _scheme_from_schema(schema: str | None, where: str) -> str | None:
    """The connection's ``schema`` field as a URL scheme (``http``/``https``), ``None`` if empty."""
    text = (schema or "").strip().lower()
    if not text:
        return None
    if text not in ("http", "https"):
        raise PacklyConnectionConfigError(
            f"{where} has schema {schema!r}; the schema of a Packly connection is the URL scheme, 'https' "
            "(or 'http' for a local sandbox). Leave it empty to use https."
        )
    return text


def _join_host_port_scheme(host: str, port: int | None, scheme: str | None, where: str) -> str:
    """One URL from ``host`` (a URL or a bare host), ``port`` and ``scheme``; refuses what disagrees.

    A bare host takes ``scheme`` (default https); a host URL keeps its own scheme, and a
    ``schema`` field naming another one is an error. A port in the host URL and a different
    ``port`` field are an error too: neither can be guessed right.
    """
    if "://" in host:
        host_scheme = host.split("://", 1)[0].lower()
        if scheme is not None and scheme != host_scheme:
            raise PacklyConnectionConfigError(
                f"{where} has a Base URL starting with {host_scheme + '://'!r} but schema {scheme!r}; they "
                "disagree. Remove the schema, or make the Base URL's scheme match it."
            )
        text = host
    else:
        bare = host.split("/", 1)[0]
        if _is_ipv6_literal(bare):  # a URI connection gives an IPv6 host without brackets
            host = f"[{bare}]" + host[len(bare) :]
        text = f"{scheme or 'https'}://{host}"
    if port is None:
        return text
    parts = urlsplit(text)
    try:
        port_in_host = parts.port
    except ValueError:
        port_in_host = None  # _checked_base_url names the bad port
    if port_in_host is not None:
        if port_in_host != port:
            raise PacklyConnectionConfigError(
                f"{where} has port {port_in_host} in its Base URL but {port} in its port field; they "
                "disagree. Keep one of them."
            )
        return text
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


def _is_ipv6_literal(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


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
    try:
        port_in_url = parts.port
    except ValueError:
        port_in_url = 0
    if port_in_url == 0:
        raise PacklyConnectionConfigError(f"{where} has Base URL {raw!r}, whose port is not a number from 1 to 65535.")
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
    # The provider adds /v1/... itself; a base URL copied with it would double it.
    path = path.removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
