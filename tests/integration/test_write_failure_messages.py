"""A write that failed after it was sent says it may have been applied (issue 9, item 14).

A POST whose connection was reset once its body was sent used to say "check the Base URL and
that Packly is reachable", as if nothing had been sent: a pipeline owner would then resend
it, and apply it twice. Over loopback, against the sandbox's fault mode.
"""

from __future__ import annotations

import socket

import pytest

from airflow_provider_packly.exceptions import PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook

from .test_retries_over_http import WRITES, connection, faulty

pytestmark = pytest.mark.integration

MAY_HAVE = "may have been applied"


@pytest.mark.parametrize("kind", ["reset", "truncated"])
def test_a_post_reset_after_it_was_sent_may_have_been_applied(kind):
    with faulty(kind) as sandbox, PacklyHook(connection=connection(sandbox)) as hook:
        with pytest.raises(PacklyTransportError) as caught:
            hook.request("POST", WRITES, json={"key": f"k-{kind}", "value": 1})
        assert sandbox.state.writes[f"k-{kind}"] == 1  # it was applied, and not resent
    message = str(caught.value)
    assert f"POST {sandbox.base_url}{WRITES}" in message
    assert MAY_HAVE in message and "was not resent" in message
    assert "reachable" not in message and "attempts" not in message  # sent once


@pytest.mark.anyio
async def test_a_post_reset_after_it_was_sent_may_have_been_applied_async():
    with faulty("reset") as sandbox:
        async with PacklyHook(connection=connection(sandbox)) as hook:
            with pytest.raises(PacklyTransportError, match=MAY_HAVE):
                await hook.arequest("POST", WRITES, json={"key": "k-async", "value": 1})
        assert sandbox.state.writes["k-async"] == 1


def test_a_post_that_timed_out_waiting_for_the_answer_may_have_been_applied():
    with (
        faulty("slow", slow_seconds=0.5) as sandbox,
        PacklyHook(connection=connection(sandbox, read_timeout=0.1)) as hook,
        pytest.raises(PacklyTransportError) as caught,
    ):
        hook.request("POST", WRITES, json={"key": "k-slow", "value": 1})
    message = str(caught.value)
    assert "0.1 s read timeout" in message and MAY_HAVE in message and "retry later" not in message


def test_a_get_reset_is_retried_and_does_not_speak_of_writes():
    with (
        faulty("reset") as sandbox,
        PacklyHook(connection=connection(sandbox, retry_max_attempts=2)) as hook,
        pytest.raises(PacklyTransportError) as caught,
    ):
        hook.request("GET", "/v1/reseller/orders")
    assert "after 2 attempts" in str(caught.value) and MAY_HAVE not in str(caught.value)


def test_a_post_that_could_not_connect_was_not_sent(make_connection):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_connection(base_url=f"http://127.0.0.1:{port}", retry_max_attempts=1)
    with PacklyHook(connection=settings) as hook, pytest.raises(PacklyTransportError) as caught:
        hook._shell(settings).request("POST", WRITES, auth=None, json={})  # no token request first
    assert "reachable" in str(caught.value) and MAY_HAVE not in str(caught.value)


@pytest.mark.parametrize(
    ("method", "failure", "applied"),
    [
        ("POST", "RemoteProtocolError", True),
        ("POST", "ReadTimeout", True),
        ("POST", "WriteError", True),
        ("POST", "ConnectError", False),
        ("POST", "ConnectTimeout", False),
        ("GET", "RemoteProtocolError", False),
        ("PUT", "ReadError", False),
    ],
)
def test_which_failures_may_have_applied_a_request(method, failure, applied):
    import httpx

    from airflow_provider_packly.retries import may_have_been_applied

    request = httpx.Request(method, "https://api.packly.io/v1/x")
    assert may_have_been_applied(request, getattr(httpx, failure)("x")) is applied
