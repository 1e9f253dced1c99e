"""What Airflow's providers manager reads about this package (entry point ``apache_airflow_provider``).

The ``packly`` connection form is declared here (``conn-fields``, rendered by Airflow 3.2+);
the hook defines no form methods. Keep this importable without importing Airflow or httpx:
every ``airflow`` command reads it. The form's defaults are the connection's own
(``core.settings``, which imports neither): written once, shown here.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_packly.core.settings import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_EXPIRES_IN,
    DEFAULT_REQUEST_DEADLINE,
    DEFAULT_RETRY_AFTER_MAX_SECONDS,
    DEFAULT_RETRY_BACKOFF_MAX_SECONDS,
    DEFAULT_RETRY_BACKOFF_SECONDS,
    DEFAULT_RETRY_MAX_ATTEMPTS,
    DEFAULT_RETRY_MAX_SECONDS,
    DEFAULT_SCOPE,
    DEFAULT_TIMEOUT,
    DEFAULT_TOKEN_REFRESH_MARGIN,
    DEFAULT_VERIFY_TLS,
    ENVIRONMENTS,
    LIVE_BASE_URL,
)

_OPTIONAL_NUMBER = ["number", "null"]


def _shown(number: float) -> float:
    """A default as the form shows it: ``30``, not ``30.0``."""
    return int(number) if float(number).is_integer() else number


def _seconds_field(label: str, description: str, default: float | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _OPTIONAL_NUMBER, "minimum": 0}
    if default is not None:
        schema["default"] = _shown(default)
    return {"label": label, "description": description, "schema": schema}


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_packly import __version__

    return {
        "package-name": "airflow-provider-packly",
        "name": "Packly",
        "description": "`Packly <https://packly.io>`__ custom packaging REST API: dielines, quotations, orders.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Packly",
                "external-doc-url": "https://packly.io/authentication",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "Packly", "python-modules": ["airflow_provider_packly.hooks.packly"]},
        ],
        "operators": [
            {"integration-name": "Packly", "python-modules": ["airflow_provider_packly.operators.packly"]},
        ],
        "sensors": [
            {"integration-name": "Packly", "python-modules": ["airflow_provider_packly.sensors.packly"]},
        ],
        "triggers": [
            {
                "integration-name": "Packly",
                "python-modules": [
                    "airflow_provider_packly.triggers.packly",
                    "airflow_provider_packly.triggers.order_events",
                ],
            },
        ],
        "connection-types": [
            {
                "connection-type": "packly",
                "hook-class-name": "airflow_provider_packly.hooks.packly.PacklyHook",
                "hook-name": "Packly",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"login": "Client ID", "password": "Client Secret", "host": "Base URL"},
                    "placeholders": {
                        "login": "client ID issued by Packly for this environment",
                        "password": "client secret issued by Packly for this environment",
                        "host": f"{LIVE_BASE_URL} (live); required for sandbox",
                    },
                },
                "conn-fields": {
                    "environment": {
                        "label": "Environment",
                        "description": (
                            "Packly environment the credentials belong to. 'live' defaults the Base URL to "
                            f"{LIVE_BASE_URL}; Packly does not document a sandbox host, so 'sandbox' "
                            "needs the Base URL set."
                        ),
                        "schema": {
                            "type": ["string", "null"],
                            "enum": list(ENVIRONMENTS),
                            "default": DEFAULT_ENVIRONMENT,
                        },
                    },
                    "scope": {
                        "label": "Scope",
                        "description": f"OAuth2 scope requested with each token; Packly allows only {DEFAULT_SCOPE!r}.",
                        "schema": {"type": ["string", "null"], "default": DEFAULT_SCOPE},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Longest wait to connect, send, read or get a pooled connection, per call.",
                        "schema": {"type": _OPTIONAL_NUMBER, "default": _shown(DEFAULT_TIMEOUT), "minimum": 0.1},
                    },
                    "refresh_margin_seconds": {
                        "label": "Token refresh margin (seconds)",
                        "description": (
                            "Fetch a new access token this long before the current one expires (at most half "
                            "its lifetime)."
                        ),
                        "schema": {
                            "type": _OPTIONAL_NUMBER,
                            "default": _shown(DEFAULT_TOKEN_REFRESH_MARGIN),
                            "minimum": 0,
                        },
                    },
                    "connect_timeout": _seconds_field(
                        "Connect timeout (seconds)", "Longest wait to open a connection; empty means Timeout."
                    ),
                    "read_timeout": _seconds_field(
                        "Read timeout (seconds)", "Longest wait for Packly's answer; empty means Timeout."
                    ),
                    "write_timeout": _seconds_field(
                        "Write timeout (seconds)", "Longest wait to send a request; empty means Timeout."
                    ),
                    "pool_timeout": _seconds_field(
                        "Pool timeout (seconds)",
                        "Longest wait for a free pooled connection when many calls run at once; empty means Timeout.",
                    ),
                    "retry_max_attempts": {
                        "label": "Attempts per call",
                        "description": (
                            "Sends at most per call, the first included; 1 turns retries off. Connection failures, "
                            "429 and 502/503/504 are retried; a POST only when Packly provably did not process it."
                        ),
                        "schema": {"type": ["integer", "null"], "default": DEFAULT_RETRY_MAX_ATTEMPTS, "minimum": 1},
                    },
                    "retry_max_seconds": _seconds_field(
                        "Retry time budget (seconds)",
                        "No retry starts if its wait would end later than this after the first send.",
                        default=DEFAULT_RETRY_MAX_SECONDS,
                    ),
                    "retry_backoff_seconds": _seconds_field(
                        "First retry wait (seconds)",
                        "Ceiling of the first backoff; it doubles per attempt, with full jitter.",
                        default=DEFAULT_RETRY_BACKOFF_SECONDS,
                    ),
                    "retry_backoff_max_seconds": _seconds_field(
                        "Longest retry wait (seconds)",
                        "The backoff ceiling never grows past this.",
                        default=DEFAULT_RETRY_BACKOFF_MAX_SECONDS,
                    ),
                    "retry_after_max_seconds": _seconds_field(
                        "Longest Retry-After honoured (seconds)",
                        "A longer Retry-After from Packly is cut to this. Packly documents no rate limits.",
                        default=DEFAULT_RETRY_AFTER_MAX_SECONDS,
                    ),
                    "request_deadline_seconds": _seconds_field(
                        "Deadline per call (seconds)",
                        "Longest one call may take in all: retries, waits and reading the whole answer, token "
                        "requests included. Empty means the retry time budget plus each timeout above once "
                        f"({_shown(DEFAULT_REQUEST_DEADLINE)} with the defaults).",
                    ),
                    "verify_tls": {
                        "label": "Verify TLS certificates",
                        "description": (
                            "Check Packly's TLS certificate (on by default). Turning it off is refused for "
                            "'live' and logs a warning: anyone on the network path could read the secret."
                        ),
                        "schema": {"type": ["boolean", "null"], "default": DEFAULT_VERIFY_TLS},
                    },
                    "ca_bundle_path": {
                        "label": "CA bundle path",
                        "description": (
                            "A PEM file (or a folder of hashed certificates) of the CAs to trust instead of "
                            "the default ones: for a private CA or a TLS-inspecting proxy. Must exist on "
                            "every machine that runs Packly tasks."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_cert_path": {
                        "label": "Client certificate path",
                        "description": (
                            "A PEM client certificate to present (mutual TLS); it may hold the key as well."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_key_path": {
                        "label": "Client certificate key path",
                        "description": "The client certificate's PEM key, if not in the certificate file; unencrypted.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "gateway_url": {
                        "label": "HTTP(S) proxy URL",
                        "description": (
                            "A forward proxy for every call, e.g. http://user:password@proxy.example.com:3128. "
                            "Empty: the HTTPS_PROXY/HTTP_PROXY/NO_PROXY environment variables apply. (Named "
                            "gateway_url because Airflow hides every field whose name contains 'proxy'.)"
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                    "default_expires_in": {
                        "label": "Token lifetime if unstated (seconds)",
                        "description": (
                            "Lifetime assumed when a token response has no expires_in. Packly documents the "
                            "field but no default; a 401 also forces a refresh."
                        ),
                        "schema": {"type": _OPTIONAL_NUMBER, "default": DEFAULT_EXPIRES_IN, "minimum": 1},
                    },
                },
            }
        ],
    }
