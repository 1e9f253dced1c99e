"""What Airflow's providers manager reads about this package (entry point ``apache_airflow_provider``).

The ``packly`` connection form is declared here (``conn-fields``, rendered by Airflow 3.2+);
the hook defines no form methods. Keep this importable without importing Airflow or httpx:
every ``airflow`` command reads it.
"""

from __future__ import annotations

from typing import Any

_OPTIONAL_NUMBER = ["number", "null"]


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
                        "host": "https://api.packly.io (live); required for sandbox",
                    },
                },
                "conn-fields": {
                    "environment": {
                        "label": "Environment",
                        "description": (
                            "Packly environment the credentials belong to. 'live' defaults the Base URL to "
                            "https://api.packly.io; Packly does not document a sandbox host, so 'sandbox' "
                            "needs the Base URL set."
                        ),
                        "schema": {"type": ["string", "null"], "enum": ["sandbox", "live"], "default": "sandbox"},
                    },
                    "scope": {
                        "label": "Scope",
                        "description": "OAuth2 scope requested with each token; Packly allows only 'external'.",
                        "schema": {"type": ["string", "null"], "default": "external"},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Longest wait to connect, send, read or get a pooled connection, per call.",
                        "schema": {"type": _OPTIONAL_NUMBER, "default": 30, "minimum": 0.1},
                    },
                    "token_refresh_margin": {
                        "label": "Token refresh margin (seconds)",
                        "description": (
                            "Fetch a new access token this long before the current one expires (at most half "
                            "its lifetime)."
                        ),
                        "schema": {"type": _OPTIONAL_NUMBER, "default": 60, "minimum": 0},
                    },
                    "default_expires_in": {
                        "label": "Token lifetime if unstated (seconds)",
                        "description": (
                            "Lifetime assumed when a token response has no expires_in. Packly documents the "
                            "field but no default; a 401 also forces a refresh."
                        ),
                        "schema": {"type": _OPTIONAL_NUMBER, "default": 300, "minimum": 1},
                    },
                },
            }
        ],
    }
