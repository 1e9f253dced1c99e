"""Shared fixtures. Airflow reads AIRFLOW_HOME at import: point it at a throwaway folder first."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="packly-tests-airflow-home-"))

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_packly.auth import TOKEN_CACHE
from airflow_provider_packly.connection import PacklyConnection

# The retry tests' fake clock (fixture `fake_time`).
pytest_plugins = ["tests.retry_time"]

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-Zq8x!"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    """Each test starts cold: the cache is process-wide by design."""
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


@pytest.fixture
def make_connection() -> Callable[..., PacklyConnection]:
    def make(**overrides: object) -> PacklyConnection:
        settings: dict[str, object] = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "environment": "sandbox",
            "base_url": "http://127.0.0.1:8089",
        }
        settings.update(overrides)
        return PacklyConnection(**settings)  # type: ignore[arg-type]

    return make


# -- TLS: a throwaway CA with server and client certificates, and the sandbox serving https -------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.integration.tls_proxy_helpers import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_sandbox(pki: Any) -> Iterator[Any]:
    from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

    with run_sandbox(SandboxConfig(), ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.server_key)) as sandbox:
        yield sandbox
