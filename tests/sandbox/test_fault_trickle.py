"""The sandbox's opt-in ``trickle`` fault: a complete answer, one byte at a time."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_packly.sandbox import FaultConfig, SandboxConfig, run_sandbox
from airflow_provider_packly.sandbox.faults import FAULT_KINDS, parse_fault_kinds


def test_trickle_is_opt_in_and_named_by_the_cli_syntax():
    assert "trickle" not in FAULT_KINDS and "trickle" not in FaultConfig().kinds
    assert parse_fault_kinds("trickle=2,500") == {"trickle": 2.0, "500": 1.0}
    with pytest.raises(ValueError, match="trickle_seconds"):
        FaultConfig(trickle_seconds=-1)


def test_a_trickled_answer_is_complete_and_arrives_a_byte_per_read():
    faults = FaultConfig(seed=1, rate=1.0, kinds=["trickle"], trickle_seconds=0.005)
    with (
        run_sandbox(SandboxConfig(faults=faults)) as sandbox,
        httpx.Client(base_url=sandbox.base_url, timeout=5) as client,
    ):
        token = client.post(
            "/v1/oauth2/token",
            auth=("sandbox-client-id", "sandbox-client-secret"),
            data={"grant_type": "client_credentials", "scope": "external"},
        ).json()["access_token"]
        with client.stream(
            "GET",
            "/v1/reseller/orders",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"},
        ) as response:
            chunks = list(response.iter_raw())
    assert response.status_code == 200
    assert isinstance(httpx.Response(200, content=b"".join(chunks)).json()["response"], list)
    body = b"".join(chunks)
    assert len(chunks) > len(body) // 4  # a byte per send (the kernel may join a few)
