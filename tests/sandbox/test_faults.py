"""Fault injection and the sandbox write endpoint, seen by plain httpx clients over loopback.

No client here retries: each test observes exactly what one request meets.
"""

from __future__ import annotations

import contextvars
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from airflow_provider_packly.sandbox import FaultConfig, SandboxConfig, run_sandbox
from airflow_provider_packly.sandbox.faults import (
    _DELIBERATE_ABORT,
    FAULT_KINDS,
    STATUS_FAULT_KINDS,
    FaultPicker,
    _HideDeliberateAborts,
    parse_fault_kinds,
)
from airflow_provider_packly.sandbox.server import RunningSandbox

from .helpers import ROOT, sandbox_cli

AUTH = ("sandbox-client-id", "sandbox-client-secret")
TOKEN_FORM = {"grant_type": "client_credentials", "scope": "external"}
ORDERS = "/v1/reseller/orders"
WRITES = "/_sandbox/v1/writes"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def only(kind: str, **options: Any) -> FaultConfig:
    """Every eligible API request gets ``kind``."""
    return FaultConfig(rate=1.0, kinds=(kind,), **options)


def get_token(client: httpx.Client) -> str:
    response = client.post("/v1/oauth2/token", auth=AUTH, data=TOKEN_FORM)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    """Records that reach uvicorn's error logger (after its filters).

    Use it once the server runs: uvicorn's logging setup drops handlers added before.
    """
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# -- configuration (no sockets) --------------------------------------------------------------------
def test_fault_config_defaults_and_validation() -> None:
    config = FaultConfig()
    assert (config.seed, config.rate, config.token_rate) == (0, 0.1, 0.0)
    assert config.kinds == dict.fromkeys(FAULT_KINDS, 1.0)
    assert config.token_kinds == dict.fromkeys(STATUS_FAULT_KINDS, 1.0)
    assert (config.slow_seconds, config.retry_after_seconds) == (2.0, 0)
    assert config.retry_after_as_date is False
    assert config.retry_after_value() == "0"
    assert FaultConfig(kinds={"500": 3, "reset": 1}).weights == (("500", 3.0), ("reset", 1.0))
    assert SandboxConfig().faults is None
    for bad in (
        {"rate": 1.5},
        {"rate": -0.1},
        {"token_rate": 2.0},
        {"kinds": ("500", "teapot")},
        {"kinds": {"500": -1}},
        {"kinds": {"500": 0}},  # a positive rate needs a positive weight
        {"token_kinds": ("reset",)},  # token faults are status faults only
        {"token_kinds": ("revoke",)},
        {"slow_seconds": -1},
        {"retry_after_seconds": 0.5},
        {"retry_after_seconds": -1},
    ):
        with pytest.raises(ValueError):
            FaultConfig(**bad)
    with pytest.raises(TypeError):
        FaultConfig(kinds="500")  # a bare string is a mistake, not a sequence of kinds
    with pytest.raises(TypeError):
        SandboxConfig(faults={"rate": 0.5})  # type: ignore[arg-type]
    assert parse_fault_kinds("500, reset=2,slow") == {"500": 1.0, "reset": 2.0, "slow": 1.0}
    for bad_text in ("", "500,nope", "500=x"):
        with pytest.raises(ValueError):
            parse_fault_kinds(bad_text)


def test_picker_draws_once_per_request_by_weight_and_alternates_503() -> None:
    weights = (("500", 1.0), ("503", 1.0))
    assert len({FaultPicker(7, 0.3, weights).draw() for _ in range(5)}) == 1
    picker = FaultPicker(7, 0.3, weights)
    draws = [picker.draw() for _ in range(4000)]
    kinds = [kind for kind, _ in draws]
    assert 0.27 < 1 - kinds.count("none") / len(kinds) < 0.33
    assert abs(kinds.count("500") - kinds.count("503")) < 150
    retry_after_503 = [retry for kind, retry in draws if kind == "503"]
    assert retry_after_503[:4] == [True, False, True, False]
    assert all(not retry for kind, retry in draws if kind in ("500", "none"))
    assert {FaultPicker(1, 0.0, weights).draw()[0] for _ in range(50)} == {"none"}
    assert FaultPicker(3, 1.0, (("429", 1.0),)).draw() == ("429", True)


def test_log_filter_only_hides_deliberate_aborts() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "ASGI callable returned without completing response.",
        None,
        None,
    )
    assert _HideDeliberateAborts().filter(record)  # not flagged in this context: kept

    def flagged() -> bool:
        _DELIBERATE_ABORT.set(True)
        return _HideDeliberateAborts().filter(record)

    assert flagged_result(flagged) is False
    assert _HideDeliberateAborts().filter(record)  # the flag stayed in the other context


def flagged_result(function: Any) -> Any:
    return contextvars.copy_context().run(function)


# -- status faults ---------------------------------------------------------------------------------
def test_status_faults_on_reads() -> None:
    with (
        run_sandbox(SandboxConfig()) as sandbox,
        httpx.Client(base_url=sandbox.base_url) as client,
    ):
        headers = bearer(get_token(client))
        sandbox.state.set_faults(only("500"))
        response = client.get(ORDERS, headers=headers)
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert "retry-after" not in response.headers
        body = response.json()
        assert body["request"] == {"uri": ORDERS, "method": "GET", "query": {}}
        assert body["response"]["code"] == "INTERNAL_SERVER_ERROR"
        assert body["response"]["http_status_code"] == 500

        sandbox.state.set_faults(only("502"))
        response = client.get(ORDERS, headers=headers)
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        assert "retry-after" not in response.headers
        assert response.text.startswith("<html>") and "502 Bad Gateway" in response.text

        sandbox.state.set_faults(only("429", retry_after_seconds=3))
        response = client.get(ORDERS, headers=headers)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        assert response.json()["response"]["code"] == "TOO_MANY_REQUESTS"

        sandbox.state.set_faults(only("503", retry_after_seconds=2))
        first, second, third = (client.get(ORDERS, headers=headers) for _ in range(3))
        assert [r.status_code for r in (first, second, third)] == [503, 503, 503]
        assert first.headers["retry-after"] == "2"
        assert first.json()["response"]["code"] == "SERVICE_UNAVAILABLE"
        assert first.json()["response"]["http_status_code"] == 503
        assert "retry-after" not in second.headers
        assert second.headers["content-type"].startswith("text/html")
        assert "503 Service Temporarily Unavailable" in second.text
        assert third.headers["retry-after"] == "2"

        sandbox.state.set_faults(only("429", retry_after_seconds=30, retry_after_as_date=True))
        response = client.get(ORDERS, headers=headers)
        when = parsedate_to_datetime(response.headers["retry-after"])
        assert response.headers["retry-after"].endswith(" GMT")
        assert 25 <= when.timestamp() - time.time() <= 31

        sandbox.state.set_faults(None)
        assert client.get(ORDERS, headers=headers).status_code == 200
        log = sandbox.state.fault_log
        assert [d.kind for d in log if d.channel == "api"] == [
            "500",
            "502",
            "429",
            "503",
            "503",
            "503",
            "429",
            "none",
        ]
        assert [d.retry_after for d in log if d.kind == "503"] == [True, False, True]


# -- transport faults ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reset", "truncated"])
def test_reset_and_truncated_are_transport_errors_for_the_sync_client(kind: str) -> None:
    with (
        run_sandbox(SandboxConfig()) as sandbox,
        uvicorn_errors() as errors,
        httpx.Client(base_url=sandbox.base_url) as client,
    ):
        headers = bearer(get_token(client))
        sandbox.state.set_faults(only(kind))
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            client.get(ORDERS, headers=headers)
        received = re.search(r"received (\d+) bytes, expected (\d+)", str(caught.value))
        assert received, caught.value
        got, declared = int(received.group(1)), int(received.group(2))
        assert got < declared
        assert (got == 0) is (kind == "reset")
        sandbox.state.set_faults(None)
        assert client.get(ORDERS, headers=headers).status_code == 200  # a new connection
    assert not [r for r in errors if "without completing" in r.getMessage()]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["reset", "truncated"])
async def test_reset_and_truncated_are_transport_errors_for_the_async_client(kind: str) -> None:
    with run_sandbox(SandboxConfig()) as sandbox:
        async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
            token = (await client.post("/v1/oauth2/token", auth=AUTH, data=TOKEN_FORM)).json()
            headers = bearer(token["access_token"])
            sandbox.state.set_faults(only(kind))
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(ORDERS, headers=headers)
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(WRITES, headers=headers, json={"key": "k", "value": 1})
            sandbox.state.set_faults(None)
            assert (await client.get(ORDERS, headers=headers)).status_code == 200
        assert sandbox.state.writes["k"] == 1  # applied although the client saw no response


def test_slow_is_a_read_timeout_and_a_late_but_complete_response() -> None:
    with (
        run_sandbox(SandboxConfig()) as sandbox,
        httpx.Client(base_url=sandbox.base_url, timeout=httpx.Timeout(5.0, read=0.1)) as client,
    ):
        headers = bearer(get_token(client))
        sandbox.state.set_faults(only("slow", slow_seconds=0.5))
        with pytest.raises(httpx.ReadTimeout):  # the answer came later than the 0.1 s read timeout
            client.get(ORDERS, headers=headers)
        with pytest.raises(httpx.ReadTimeout):
            client.post(WRITES, headers=headers, json={"key": "slow", "value": 1})
        sandbox.state.set_faults(only("slow", slow_seconds=0.2))
        with pytest.raises(httpx.ReadTimeout):  # late ...
            client.get(ORDERS, headers=headers)
        response = client.get(ORDERS, headers=headers, timeout=5.0)  # ... but complete
        assert response.status_code == 200 and len(response.json()["response"]) == 10
        assert [d.kind for d in sandbox.state.fault_log if d.channel == "api"] == ["slow"] * 4
        assert sandbox.state.writes["slow"] == 1


@pytest.mark.anyio
async def test_slow_is_a_read_timeout_for_the_async_client() -> None:
    with run_sandbox(SandboxConfig(faults=only("slow", slow_seconds=0.5))) as sandbox:
        timeout = httpx.Timeout(5.0, read=0.1)
        async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=timeout) as client:
            token = (await client.post("/v1/oauth2/token", auth=AUTH, data=TOKEN_FORM)).json()
            with pytest.raises(httpx.ReadTimeout):
                await client.get(ORDERS, headers=bearer(token["access_token"]))


def test_revoke_serves_the_call_then_the_next_call_gets_401() -> None:
    with (
        run_sandbox(SandboxConfig(faults=only("revoke"))) as sandbox,
        httpx.Client(base_url=sandbox.base_url) as client,
    ):
        headers = bearer(get_token(client))
        assert client.get(ORDERS, headers=headers).status_code == 200
        assert sandbox.state.forced_revocations == 1
        refused = client.get(ORDERS, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["response"]["code"] == "UNAUTHORIZED"
        # That 401 was a revoke fault too, but no token was left to revoke: not counted.
        assert sandbox.state.forced_revocations == 1
        assert client.get(ORDERS, headers=bearer(get_token(client))).status_code == 200
        assert sandbox.state.forced_revocations == 2
        assert sandbox.state.fault_counts == {"revoke": 3}


def test_a_refresh_on_401_client_needs_one_token_per_forced_revocation() -> None:
    config = SandboxConfig(faults=FaultConfig(seed=5, rate=0.3, kinds=("revoke",)))
    with run_sandbox(config) as sandbox, httpx.Client(base_url=sandbox.base_url) as client:
        token = get_token(client)
        for _ in range(60):
            response = client.get(ORDERS, headers=bearer(token))
            if response.status_code == 401:
                token = get_token(client)
                response = client.get(ORDERS, headers=bearer(token))
            assert response.status_code == 200
        # The last call may have revoked the token: one fault-free call settles the count.
        sandbox.state.set_faults(None)
        if client.get(ORDERS, headers=bearer(token)).status_code == 401:
            assert client.get(ORDERS, headers=bearer(get_token(client))).status_code == 200
        state = sandbox.state
        assert state.forced_revocations >= 5
        assert state.token_requests == state.token_requests_ok == 1 + state.forced_revocations


# -- determinism -----------------------------------------------------------------------------------
def observe(sandbox: RunningSandbox, calls: int) -> list[str]:
    """Send ``calls`` sequential reads and writes, refreshing the token on 401; one line each."""
    seen: list[str] = []
    with httpx.Client(base_url=sandbox.base_url, timeout=5.0) as client:
        token = get_token(client)
        for number in range(calls):
            try:
                if number % 3 == 2:
                    response = client.post(WRITES, headers=bearer(token), json={"key": f"w{number}", "value": number})
                else:
                    response = client.get(ORDERS, headers=bearer(token), params={"limit": 2})
                seen.append(f"{response.status_code} {response.headers.get('retry-after')}")
                if response.status_code == 401:
                    token = get_token(client)
            except httpx.TransportError as exc:
                seen.append(type(exc).__name__)
    return seen


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    def faults(seed: int) -> FaultConfig:
        return FaultConfig(seed=seed, rate=0.5, slow_seconds=0.01)

    runs: list[tuple[list[str], list[str], dict[str, int]]] = []
    for seed in (11, 11, 12):
        with run_sandbox(SandboxConfig(faults=faults(seed))) as sandbox:
            observed = observe(sandbox, 60)
            kinds = [d.kind for d in sandbox.state.fault_log if d.channel == "api"]
            runs.append((observed, kinds, dict(sandbox.state.writes)))
    (first, first_kinds, first_writes), (second, second_kinds, second_writes) = runs[:2]
    assert first == second and first_kinds == second_kinds and first_writes == second_writes
    assert len(first_kinds) == 60 and len(set(first_kinds)) >= 6
    assert runs[2][1] != first_kinds and runs[2][0] != first


# -- the write endpoint ----------------------------------------------------------------------------
#: For each fault: its ordinal (to reach the 2nd 503) and whether the write is applied.
WRITE_CASES = [
    ("none", 1, True),
    ("429", 1, False),
    ("503", 1, False),  # the 1st 503 has Retry-After: not processed
    ("503", 2, True),  # the 2nd has not: processed, then the 503
    ("500", 1, True),
    ("502", 1, True),
    ("reset", 1, True),
    ("truncated", 1, True),
    ("slow", 1, True),
    ("revoke", 1, True),
]


def test_write_semantics_per_fault_kind() -> None:
    with (
        run_sandbox(SandboxConfig()) as sandbox,
        httpx.Client(base_url=sandbox.base_url, timeout=httpx.Timeout(5.0, read=0.1)) as client,
    ):
        state = sandbox.state
        for kind, ordinal, applied in WRITE_CASES:
            key = f"{kind}-{ordinal}"
            headers = bearer(get_token(client))
            state.set_faults(None if kind == "none" else only(kind, slow_seconds=0.3))
            for _ in range(ordinal - 1):
                client.get(ORDERS, headers=headers)  # consumes the 1st 503
            try:
                response = client.post(WRITES, headers=headers, json={"key": key, "value": 1})
            except httpx.TransportError:
                assert kind in ("reset", "truncated", "slow")
            else:
                assert kind in ("none", "revoke", *STATUS_FAULT_KINDS)
                expected_status = 201 if kind in ("none", "revoke") else int(kind)
                assert response.status_code == expected_status, (kind, response.text)
            assert state.writes[key] == (1 if applied else 0), key
            assert state.write_attempts[key] == 1
            decision = state.fault_log[-1]
            assert (decision.kind, decision.write_key, decision.write_applied) == (
                kind,
                key,
                applied,
            )
        state.set_faults(None)
        headers = bearer(get_token(client))
        for kind, ordinal, applied in WRITE_CASES:
            read = client.get(f"{WRITES}/{kind}-{ordinal}", headers=headers)
            assert read.status_code == 200
            assert read.json()["response"] == {"key": f"{kind}-{ordinal}", "applied": int(applied)}
        outcomes = state.write_outcomes
        assert outcomes[("429", False)] == 1 and outcomes[("503", False)] == 1
        assert outcomes[("503", True)] == 1 and outcomes[("500", True)] == 1
        assert sum(state.writes.values()) == 8


def test_write_endpoint_contract() -> None:
    with (
        run_sandbox(SandboxConfig()) as sandbox,
        httpx.Client(base_url=sandbox.base_url) as client,
    ):
        state = sandbox.state
        refused = client.post(WRITES, json={"key": "a", "value": 1})
        assert refused.status_code == 401
        assert client.get(f"{WRITES}/a").status_code == 401
        headers = bearer(get_token(client))
        created = client.post(WRITES, headers=headers, json={"key": "a", "value": {"x": [1]}})
        assert created.status_code == 201
        assert created.json() == {
            "request": {"uri": WRITES, "method": "POST", "query": {}},
            "response": {"key": "a", "applied": 1},
        }
        again = client.post(WRITES, headers=headers, json={"key": "a", "value": 2})
        assert again.json()["response"]["applied"] == 2
        for body, path in ((b"not json", "body"), (b"[1]", "body"), (b'{"key": ""}', "key")):
            bad = client.post(WRITES, headers=headers, content=body)
            assert bad.status_code == 400
            assert bad.json()["response"]["errors"][0]["path"] == path
        bad = client.post(WRITES, headers=headers, json={"key": 3})
        assert bad.json()["response"]["errors"][0]["code"] == "SBX_1001"
        assert client.get(f"{WRITES}/a", headers=headers).json()["response"]["applied"] == 2
        assert client.get(f"{WRITES}/never", headers=headers).json()["response"]["applied"] == 0
        assert state.writes == {"a": 2}
        assert state.write_attempts == {"a": 3, "": 1}  # the 401 arrived too
        assert state.api_requests == {}  # sandbox paths are not Packly API requests


# -- eligibility -----------------------------------------------------------------------------------
def test_token_endpoint_is_faulted_only_with_a_token_rate() -> None:
    with (
        run_sandbox(SandboxConfig(faults=FaultConfig(rate=1.0, kinds=("500",)))) as sandbox,
        httpx.Client(base_url=sandbox.base_url) as client,
    ):
        state = sandbox.state
        for _ in range(5):
            get_token(client)
        assert client.post("/v1/oauth2/token", auth=("x", "y"), data=TOKEN_FORM).status_code == 401
        assert state.token_fault_counts == {"none": 6}

        state.set_faults(FaultConfig(rate=0.0, token_rate=1.0, retry_after_seconds=1))
        seen = [client.post("/v1/oauth2/token", auth=AUTH, data=TOKEN_FORM) for _ in range(40)]
        assert {r.status_code for r in seen} == {500, 502, 503, 429}
        assert all(r.headers["retry-after"] == "1" for r in seen if r.status_code == 429)
        wrong_credentials = client.post("/v1/oauth2/token", auth=("x", "y"), data=TOKEN_FORM)
        assert wrong_credentials.status_code in (500, 502, 503, 429)  # a fault, never a 401
        assert state.token_requests == 47 and state.token_requests_ok == 5  # none issued
        counts = state.token_fault_counts
        assert sum(counts.values()) == 47 and not set(counts) - {"none", *STATUS_FAULT_KINDS}
        assert state.fault_counts == {}  # no API request was made


def test_control_endpoints_and_other_paths_are_never_faulted() -> None:
    every_kind = FaultConfig(rate=1.0, token_rate=1.0, slow_seconds=5.0)
    with (
        run_sandbox(SandboxConfig(faults=every_kind)) as sandbox,
        httpx.Client(base_url=sandbox.base_url, timeout=2.0) as client,
    ):
        for _ in range(10):
            assert client.get("/_sandbox/stats").status_code == 200
            assert client.post("/_sandbox/revoke-tokens").status_code == 200
            assert client.post("/_sandbox/reset-clock").status_code == 200
            assert client.get("/v1/elsewhere").status_code == 404
        state = sandbox.state
        assert state.fault_counts == {} and state.token_fault_counts == {}
        assert state.fault_log == []


def test_default_sandbox_has_no_faults_but_counts_decisions() -> None:
    with run_sandbox() as sandbox, httpx.Client(base_url=sandbox.base_url) as client:
        headers = bearer(get_token(client))
        for _ in range(20):
            assert client.get(ORDERS, headers=headers).status_code == 200
        assert sandbox.state.faults is None
        assert sandbox.state.fault_counts == {"none": 20}
        assert client.get("/_sandbox/stats").json()["faults"] is None


# -- stats -----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_stats_report_faults_revocations_and_writes() -> None:
    faults = FaultConfig(seed=3, rate=0.4, kinds=("500", "429", "revoke"))
    with run_sandbox(SandboxConfig(faults=faults)) as sandbox:
        async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
            tokens: list[str] = []

            async def refresh() -> dict[str, str]:
                answer = await client.post("/v1/oauth2/token", auth=AUTH, data=TOKEN_FORM)
                tokens.append(answer.json()["access_token"])
                return bearer(tokens[-1])

            headers = await refresh()
            for number in range(30):
                answer = await client.post(WRITES, headers=headers, json={"key": f"k{number % 10}"})
                if answer.status_code == 401:
                    headers = await refresh()
            response = await client.get("/_sandbox/stats")
    stats = response.json()
    state = sandbox.state
    assert stats["faults"] == faults.describe()
    assert stats["fault_counts"] == dict(state.fault_counts)
    assert sum(stats["fault_counts"].values()) == 30
    assert stats["token_fault_counts"] == {"none": len(tokens)} and len(tokens) >= 2
    assert stats["forced_revocations"] == state.forced_revocations >= 1
    assert stats["write_attempts"] == 30
    assert stats["writes_applied"] == sum(state.writes.values()) > 0
    assert stats["write_keys_duplicated"] == sum(1 for n in state.writes.values() if n >= 2) > 0
    assert sum(stats["write_outcomes"].values()) == 30
    # 429s and the 401 after each revocation applied nothing; the rest did.
    applied = sum(n for k, n in stats["write_outcomes"].items() if k.endswith(":applied"))
    assert applied == stats["writes_applied"]
    assert stats["write_outcomes"].get("429:applied", 0) == 0
    assert stats["write_outcomes"]["429:not_applied"] == stats["fault_counts"]["429"]
    assert not any(token in response.text for token in tokens)


# -- command line ----------------------------------------------------------------------------------
def test_command_line_fault_flags() -> None:
    flags = (
        "--fault-rate",
        "1",
        "--fault-kinds",
        "429",
        "--retry-after",
        "4",
        "--fault-seed",
        "9",
        "--token-fault-rate",
        "0",
    )
    with sandbox_cli(*flags) as sandbox:
        assert "faults: rate 1.0 (429)" in sandbox.first_line and "seed 9" in sandbox.first_line
        with httpx.Client(base_url=sandbox.base_url) as client:
            response = client.get(ORDERS, headers=bearer(get_token(client)))
            assert response.status_code == 429
            assert response.headers["retry-after"] == "4"
    assert sandbox.process.returncode == 0
    help_text = subprocess.run(
        [sys.executable, "-m", "airflow_provider_packly.sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    ).stdout
    for flag in (
        "--fault-rate",
        "--fault-seed",
        "--fault-kinds",
        "--slow-seconds",
        "--retry-after",
        "--token-fault-rate",
    ):
        assert flag in help_text
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_provider_packly.sandbox",
            "--fault-rate",
            "0.5",
            "--fault-kinds",
            "500,teapot",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2 and "teapot" in bad.stderr


def test_the_echo_fault_quotes_the_request_headers_credentials_included():
    """The ``echo`` fault is the hostile page the provider must never carry into its errors."""
    import httpx

    from airflow_provider_packly.sandbox import FaultConfig, SandboxConfig, run_sandbox

    faults = FaultConfig(seed=1, rate=1.0, kinds=["echo"])
    with run_sandbox(SandboxConfig(faults=faults)) as sandbox:
        answer = httpx.get(sandbox.base_url + "/v1/reseller/orders", headers={"Authorization": "Bearer T0k-echoed"})
    assert answer.status_code == 502
    assert "authorization: Bearer T0k-echoed" in answer.text
