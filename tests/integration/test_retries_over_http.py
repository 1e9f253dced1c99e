"""The retry policy and timeouts over real loopback HTTP, against the sandbox's fault mode."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import FaultConfig, SandboxConfig, run_sandbox

pytestmark = pytest.mark.integration

WRITES = "/_sandbox/v1/writes"


def faulty(*kinds: str, rate: float = 1.0, **options):
    return run_sandbox(SandboxConfig(faults=FaultConfig(seed=1, rate=rate, kinds=kinds, **options)))


def connection(sandbox, **overrides) -> PacklyConnection:
    settings = {
        "client_id": "sandbox-client-id",
        "client_secret": "sandbox-client-secret",
        "base_url": sandbox.base_url,
        "retry_backoff_seconds": 0.01,
    }
    settings.update(overrides)
    return PacklyConnection(**settings)


@pytest.mark.parametrize("kind", ["reset", "truncated", "502", "503"])
def test_a_read_that_always_fails_stops_after_the_attempts_allowed(kind):
    with faulty(kind) as sandbox, PacklyHook(connection=connection(sandbox, retry_max_attempts=3)) as hook:
        with pytest.raises((PacklyTransportError, PacklyAPIError), match="after 3 attempts"):
            hook.request("GET", "/v1/reseller/orders")
        assert sandbox.state.api_requests["/v1/reseller/orders"] == 3


def test_a_read_recovers_from_intermittent_faults():
    with faulty("reset", "502", "503", "429", "truncated", rate=0.3) as sandbox:
        with PacklyHook(connection=connection(sandbox)) as hook:
            statuses = [hook.request("GET", "/v1/reseller/orders").status_code for _ in range(30)]
        assert statuses == [200] * 30
        assert sandbox.state.api_requests["/v1/reseller/orders"] > 30  # faults were met and retried


def test_a_slow_answer_is_a_clear_timeout_naming_endpoint_and_limit():
    with (
        faulty("slow", slow_seconds=0.5) as sandbox,
        PacklyHook(connection=connection(sandbox, read_timeout=0.1, retry_max_attempts=2)) as hook,
        pytest.raises(PacklyTransportError) as caught,
    ):
        hook.request("GET", "/v1/reseller/orders")
    message = str(caught.value)
    assert (
        f"GET {sandbox.base_url}/v1/reseller/orders got no answer within the 0.1 s read timeout after 2 attempts"
        in message
    )
    assert "read_timeout" in message


def test_a_write_that_timed_out_is_not_resent():
    with faulty("slow", slow_seconds=0.5) as sandbox:
        with PacklyHook(connection=connection(sandbox, read_timeout=0.1)) as hook, pytest.raises(PacklyTransportError):
            hook.request("POST", WRITES, json={"key": "k1", "value": 1})
        assert sandbox.state.write_attempts["k1"] == 1
        assert sandbox.state.writes["k1"] == 1  # applied once: resending would have duplicated it


def test_a_write_refused_with_429_is_resent_and_applied_once():
    with faulty("429", rate=0.5) as sandbox:
        with PacklyHook(connection=connection(sandbox)) as hook:
            for n in range(10):
                hook.request("POST", WRITES, json={"key": f"k{n}", "value": n})
        assert all(sandbox.state.writes[f"k{n}"] == 1 for n in range(10))
        assert sum(sandbox.state.write_attempts.values()) > 10


def test_retry_after_as_an_http_date_is_honoured(caplog, fake_time):
    caplog.set_level(logging.INFO, logger="airflow_provider_packly.retries")
    # An HTTP date has whole seconds: 2 s ahead means a wait of more than 1 s, far above the
    # 0.01 s backoff this connection would use if the date were not understood.
    with (
        faulty("429", rate=0.5, retry_after_seconds=2, retry_after_as_date=True) as sandbox,
        PacklyHook(connection=connection(sandbox)) as hook,
    ):
        for _ in range(3):
            assert hook.request("GET", "/v1/reseller/orders").status_code == 200
    waits = [
        float(re.search(r"in ([0-9.]+) s$", r.getMessage()).group(1))
        for r in caplog.records
        if "HTTP 429" in r.getMessage()
    ]
    assert waits and all(wait > 1.0 for wait in waits)
    assert [round(wait, 2) for wait in fake_time.waits] == waits  # each logged wait is the one taken


def test_async_reads_recover_too():
    async def main(sandbox):
        async with PacklyHook(connection=connection(sandbox)) as hook:
            responses = await asyncio.gather(*(hook.arequest("GET", "/v1/reseller/orders") for _ in range(40)))
        return [response.status_code for response in responses]

    with faulty("reset", "503", "truncated", rate=0.3) as sandbox:
        assert asyncio.run(main(sandbox)) == [200] * 40
