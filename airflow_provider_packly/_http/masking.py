"""Defence in depth: the secrets the provider holds are given to Airflow's secrets masker.

The provider never logs a token or a password; registering them means Airflow hides them
should anything else ever log them. Airflow is imported only inside the calls (best effort:
outside Airflow, or on a failure, nothing is registered and the call goes on).
"""

from __future__ import annotations

import itertools
import logging

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.core.tokens import AccessToken

__all__ = ["MAX_MASKED_TOKENS", "amask_proxy_credentials", "amask_token", "mask_proxy_credentials", "mask_token"]

_log = logging.getLogger(__name__)


#: Airflow's secrets masker keeps every secret it is given and slows with each one
#: (docs/benchmarks.md: 0.16 ms to add a secret with 1 stored, 19 ms with 1,000, paid on the
#: event loop in a triggerer). A long-lived process refreshing tokens for weeks stops
#: registering after this many: registration is defence in depth only, the provider never
#: logs a token.
MAX_MASKED_TOKENS = 100
_masked_tokens = itertools.count()


def mask_token(token: AccessToken) -> None:
    """Defence in depth: Airflow's masker hides the token if anything else ever logs it."""
    if next(_masked_tokens) >= MAX_MASKED_TOKENS:
        return
    _mask(token.value, "access token")


async def amask_token(token: AccessToken) -> None:
    """``mask_token`` on an event loop: the sync call would block it on a supervisor round trip."""
    if next(_masked_tokens) >= MAX_MASKED_TOKENS:
        return
    await _amask(token.value, "access token")


def _mask(value: str, what: str) -> None:
    """Give ``value`` to Airflow's secret masker. Best effort: masking is defence in depth (the
    provider never logs secrets), so a failure of it must not fail the call; it is logged at
    DEBUG by its type only (its message could hold the value)."""
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception as exc:  # noqa: BLE001 - best effort by design, see the docstring
        _log.debug("Could not give the %s to Airflow's secret masker (%s).", what, type(exc).__name__)


async def _amask(value: str, what: str) -> None:
    """``_mask`` on an event loop: the sync call would block it on a supervisor round trip."""
    try:
        from airflow.sdk import log as sdk_log

        amask_secret = getattr(sdk_log, "amask_secret", None)
        if amask_secret is not None:  # Airflow 3.3+; 3.2 has only the blocking call, so skip it there
            await amask_secret(value)
    except Exception as exc:  # noqa: BLE001 - best effort by design, see _mask
        _log.debug("Could not give the %s to Airflow's secret masker (%s).", what, type(exc).__name__)


#: Digests of the proxy passwords already given to the masker: each costs a round trip to the
#: task supervisor, and a triggerer's many hooks share one proxy.
_masked_proxy_passwords: set[str] = set()


def _proxy_password(connection: PacklyConnection) -> str | None:
    """The proxy password not yet registered with the masker in this process, else ``None``."""
    if connection.proxy_url is None:
        return None
    import hashlib
    from urllib.parse import unquote, urlsplit

    password = urlsplit(connection.proxy_url).password
    if not password:
        return None
    password = unquote(password)
    digest = hashlib.sha256(password.encode()).hexdigest()
    if digest in _masked_proxy_passwords:
        return None
    _masked_proxy_passwords.add(digest)
    return password


def mask_proxy_credentials(connection: PacklyConnection) -> None:
    """Defence in depth: the proxy's password is never logged, and Airflow's masker hides it
    if anything else ever does (its extra key cannot be one Airflow hides by name)."""
    password = _proxy_password(connection)
    if password is None:
        return
    _mask(password, "proxy password")


async def amask_proxy_credentials(connection: PacklyConnection) -> None:
    """``mask_proxy_credentials`` on an event loop (skipped on Airflow 3.2, as for tokens)."""
    password = _proxy_password(connection)
    if password is None:
        return
    await _amask(password, "proxy password")
