"""``core.settings``: each default written once, the retry settings checked by one rule, no heavy imports."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from airflow_provider_packly import connection as connection_shim
from airflow_provider_packly.core import settings
from airflow_provider_packly.core.errors import PacklyConnectionConfigError
from airflow_provider_packly.core.retry import RetryRules
from airflow_provider_packly.core.settings import PacklyConnection, TlsSettings
from airflow_provider_packly.get_provider_info import get_provider_info
from airflow_provider_packly.retries import RetryPolicy

from .purity import modules_loaded_by

LIVE = {"client_id": "an-id", "client_secret": "a-secret", "environment": "live"}


def test_settings_import_neither_airflow_nor_httpx():
    """``get_provider_info`` reads the defaults from here; every ``airflow`` command imports it."""
    for module in ("airflow_provider_packly.core.settings", "airflow_provider_packly.get_provider_info"):
        loaded = modules_loaded_by(module)
        assert not loaded & {"airflow", "httpx", "httpcore", "anyio"}, module


def _form_defaults() -> dict[str, object]:
    (connection_type,) = get_provider_info()["connection-types"]
    return {
        name: field["schema"]["default"]
        for name, field in connection_type["conn-fields"].items()
        if "default" in field["schema"]
    }


def test_the_connection_form_shows_the_settings_defaults():
    assert _form_defaults() == {
        "environment": settings.DEFAULT_ENVIRONMENT,
        "scope": settings.DEFAULT_SCOPE,
        "timeout": settings.DEFAULT_TIMEOUT,
        "refresh_margin_seconds": settings.DEFAULT_TOKEN_REFRESH_MARGIN,
        "retry_max_attempts": settings.DEFAULT_RETRY_MAX_ATTEMPTS,
        "retry_max_seconds": settings.DEFAULT_RETRY_MAX_SECONDS,
        "retry_backoff_seconds": settings.DEFAULT_RETRY_BACKOFF_SECONDS,
        "retry_backoff_max_seconds": settings.DEFAULT_RETRY_BACKOFF_MAX_SECONDS,
        "retry_after_max_seconds": settings.DEFAULT_RETRY_AFTER_MAX_SECONDS,
        "verify_tls": settings.DEFAULT_VERIFY_TLS,
        "default_expires_in": settings.DEFAULT_EXPIRES_IN,
    }
    (connection_type,) = get_provider_info()["connection-types"]
    fields = connection_type["conn-fields"]
    assert fields["environment"]["schema"]["enum"] == list(settings.ENVIRONMENTS)
    assert settings.LIVE_BASE_URL in fields["environment"]["description"]
    assert (
        f"({settings.DEFAULT_REQUEST_DEADLINE:g} with the defaults)"
        in fields["request_deadline_seconds"]["description"]
    )


def test_the_form_shows_whole_defaults_as_whole_numbers():
    """``30``, not ``30.0``: the form's JSON stays as it was before the defaults moved."""
    for name, value in _form_defaults().items():
        if isinstance(value, float):
            assert not value.is_integer(), name


def test_a_connection_and_a_retry_policy_share_their_defaults():
    built = PacklyConnection.from_fields(login="an-id", password="a-secret", host=None, extra={"environment": "live"})
    assert built == PacklyConnection(**LIVE, base_url=settings.LIVE_BASE_URL)
    assert (
        built.scope,
        built.timeout,
        built.token_refresh_margin,
        built.default_expires_in,
        built.tls,
    ) == (
        settings.DEFAULT_SCOPE,
        settings.DEFAULT_TIMEOUT,
        settings.DEFAULT_TOKEN_REFRESH_MARGIN,
        settings.DEFAULT_EXPIRES_IN,
        TlsSettings(verify=settings.DEFAULT_VERIFY_TLS),
    )
    retry = (
        built.retry_max_attempts,
        built.retry_max_seconds,
        built.retry_backoff_seconds,
        built.retry_backoff_max_seconds,
        built.retry_after_max_seconds,
    )
    policy = RetryPolicy()
    assert retry == (
        policy.max_attempts,
        policy.max_seconds,
        policy.backoff,
        policy.backoff_max,
        policy.retry_after_max,
    )
    assert [f.default for f in dataclasses.fields(RetryRules)] == list(retry)
    assert built.request_deadline() == settings.DEFAULT_REQUEST_DEADLINE == 180


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_attempts": 0}, "has max_attempts 0; give a whole number, 1 or more (1 turns retries off)"),
        ({"max_attempts": 2.5}, "has max_attempts 2.5; give a whole number"),
        ({"max_attempts": math.nan}, "has max_attempts nan; give a whole number"),
        ({"backoff": -1}, "has backoff -1; use 0 or more seconds"),
        ({"max_seconds": math.nan}, "has max_seconds nan; use 0 or more seconds"),
        ({"retry_after_max": math.inf}, "has retry_after_max inf; use 0 or more seconds"),
    ],
)
def test_a_retry_policy_is_checked_by_the_connections_rule(changes, message):
    """One rule, one message: a policy built directly is refused as a connection's settings are
    (NaN and a fractional attempt count were accepted by the policy's own check before)."""
    with pytest.raises(PacklyConnectionConfigError, match=re.escape("The Packly retry policy " + message)):
        RetryPolicy(**changes)
    with pytest.raises(ValueError):  # still a ValueError, as before
        RetryRules(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"retry_max_attempts": 0}, "has retry_max_attempts 0; give a whole number, 1 or more (1 turns retries off)"),
        ({"retry_backoff_seconds": -1}, "has retry_backoff_seconds -1; use 0 or more seconds"),
    ],
)
def test_a_connection_names_its_own_retry_setting(changes, message):
    with pytest.raises(PacklyConnectionConfigError, match=re.escape("Packly connection 'packly_x' " + message)):
        PacklyConnection(**LIVE, conn_id="packly_x", **changes)


def test_a_connections_retry_settings_make_its_policy():
    """One mapping (``RETRY_SETTINGS``) from the connection's names to the policy's, used by the
    hook's ``retry_policy_for``."""
    from airflow_provider_packly.hooks.packly import retry_policy_for

    connection = PacklyConnection(
        **LIVE,
        retry_max_attempts=3,
        retry_max_seconds=20,
        retry_backoff_seconds=0.25,
        retry_backoff_max_seconds=4,
        retry_after_max_seconds=30,
    )
    assert connection.retry_settings() == {
        "max_attempts": 3,
        "max_seconds": 20,
        "backoff": 0.25,
        "backoff_max": 4,
        "retry_after_max": 30,
    }
    policy = RetryPolicy.for_connection(connection)
    assert type(policy) is RetryPolicy and type(RetryRules.for_connection(connection)) is RetryRules
    assert policy == retry_policy_for(connection)
    assert (policy.max_attempts, policy.max_seconds, policy.backoff, policy.backoff_max, policy.retry_after_max) == (
        3,
        20,
        0.25,
        4,
        30,
    )
    assert set(settings.RETRY_SETTINGS) == {f.name for f in dataclasses.fields(RetryRules)}


def test_the_connection_module_is_a_shim_of_the_same_objects():
    for name in connection_shim.__all__:
        assert getattr(connection_shim, name) is getattr(settings, name), name
