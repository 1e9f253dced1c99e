"""The sandbox's ``truncated-gzip`` fault: whole HTTP framing, a gzip stream cut short."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyIncompleteBodyError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

from .test_faults import ORDERS, WRITES, bearer, get_token, only

BOX = {"article": "s020_v1", "material": "SBS300", "width": "120", "depth": "80", "height": "40"}


@pytest.mark.parametrize("path", ["/v1/reseller/dieline", ORDERS])
def test_the_body_is_a_gzip_stream_cut_short_with_a_matching_length(path):
    with run_sandbox(SandboxConfig()) as sandbox, httpx.Client(base_url=sandbox.base_url) as client:
        headers = bearer(get_token(client))
        whole = client.get(path, params=BOX, headers=headers).content
        sandbox.state.set_faults(only("truncated-gzip"))
        with client.stream("GET", path, params=BOX, headers=headers) as response:
            raw = b"".join(response.iter_raw())
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)  # the framing is whole
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    part = decompressor.decompress(raw)
    assert not decompressor.eof and whole.startswith(part) and len(part) < len(whole)
    assert len(gzip.compress(whole, mtime=0)) > len(raw)


def test_a_write_is_applied_and_the_hook_reports_the_answer_incomplete():
    with run_sandbox(SandboxConfig()) as sandbox:
        connection = PacklyConnection(
            client_id="sandbox-client-id",
            client_secret="sandbox-client-secret",
            base_url=sandbox.base_url,
            retry_backoff_seconds=0.01,
        )
        sandbox.state.set_faults(only("truncated-gzip"))
        with PacklyHook(connection=connection) as hook:
            with pytest.raises(PacklyIncompleteBodyError):
                hook.request("POST", WRITES, json={"key": "cut", "value": 1})
            with pytest.raises(PacklyIncompleteBodyError, match="arrived incomplete"):
                hook.request("GET", ORDERS)
        assert sandbox.state.writes["cut"] == 1  # applied once, not resent
        assert sandbox.state.fault_counts["truncated-gzip"] == 1 + 5  # the GET was retried
