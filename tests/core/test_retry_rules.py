"""The retry policy: pure decisions, then the hook's sync and async shells with MockTransport."""

from __future__ import annotations

import email.utils
import logging
import time

import httpx
import pytest

from airflow_provider_packly.exceptions import PacklyAPIError, PacklyAuthError, PacklyTransportError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.retries import IDEMPOTENT_EXTENSION, RetryPolicy, parse_retry_after

from ..conftest import CLIENT_SECRET

POLICY = RetryPolicy()
#: The access token the scripted Packly issues: distinct enough to be searched for in log lines.
ACCESS_TOKEN = "tok-Vr8-retry-secret"


def request(method: str, **extensions: object) -> httpx.Request:
    built = httpx.Request(method, "https://api.packly.io/v1/x")
    built.extensions.update(extensions)
    return built


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


@pytest.mark.parametrize(
    ("method", "outcome", "retried"),
    [
        ("GET", answer(502), True),
        ("GET", answer(503), True),
        ("GET", answer(504), True),
        ("GET", answer(429), True),
        ("GET", answer(500), False),
        ("GET", answer(400), False),
        ("GET", answer(401), False),
        ("PUT", answer(503), True),
        ("DELETE", answer(504), True),
        ("POST", answer(429), True),
        ("POST", answer(503, **{"Retry-After": "1"}), True),
        ("POST", answer(503), False),
        ("POST", answer(502), False),
        ("POST", answer(504), False),
        ("PATCH", answer(502), False),
        ("GET", httpx.ConnectError("refused"), True),
        ("POST", httpx.ConnectError("refused"), True),
        ("POST", httpx.ConnectTimeout("slow connect"), True),
        ("POST", httpx.PoolTimeout("pool"), True),
        ("POST", httpx.ReadTimeout("slow"), False),
        ("POST", httpx.RemoteProtocolError("reset"), False),
        ("PATCH", httpx.ReadError("reset"), False),
        ("GET", httpx.ReadTimeout("slow"), True),
        ("GET", httpx.RemoteProtocolError("reset"), True),
        ("GET", ValueError("not a transport error"), False),
    ],
)
def test_what_is_retried(method, outcome, retried):
    assert (POLICY.reason(request(method), outcome) is not None) is retried


def test_a_post_marked_idempotent_follows_the_full_policy():
    token_request = request("POST", **{IDEMPOTENT_EXTENSION: True})
    assert POLICY.reason(token_request, answer(502)) == "HTTP 502"
    assert POLICY.reason(token_request, httpx.ReadTimeout("slow")) == "ReadTimeout"
    assert POLICY.reason(token_request, answer(401)) is None  # a credentials rejection never is


def test_retry_after_in_seconds_or_as_http_date():
    now = time.time()
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") is None
    assert parse_retry_after(None) is None


def test_wait_honours_retry_after_up_to_the_cap():
    policy = RetryPolicy(retry_after_max=10)
    assert policy.wait_seconds(1, answer(429, **{"Retry-After": "3"})) == 3.0
    assert policy.wait_seconds(1, answer(429, **{"Retry-After": "3600"})) == 10.0


def test_backoff_is_full_jitter_under_a_doubling_ceiling():
    policy = RetryPolicy(backoff=0.5, backoff_max=3)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [policy.wait_seconds(attempt, answer(503)) for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.6  # spread over the range, not a constant


def test_bad_policy_values_are_refused():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# -- through the hook -------------------------------------------------------------------------------


class Script:
    """Answers the token endpoint normally and API calls from a script (responses or exceptions)."""

    def __init__(self, *steps: httpx.Response | Exception, token_steps: tuple = ()) -> None:
        self.steps = list(steps)
        self.token_steps = list(token_steps)
        self.api_calls: list[str] = []
        self.token_calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            self.token_calls += 1
            step = self.token_steps.pop(0) if self.token_steps else None
        else:
            self.api_calls.append(request.method)
            step = self.steps.pop(0) if self.steps else None
        if isinstance(step, Exception):
            raise step
        if step is not None:
            return step
        if request.url.path == "/v1/oauth2/token":
            return httpx.Response(200, json={"token_type": "bearer", "access_token": ACCESS_TOKEN, "expires_in": 3600})
        return httpx.Response(200, json={"response": "ok"})


def fast(make_connection, **overrides):
    return make_connection(retry_backoff_seconds=0.001, **overrides)


@pytest.fixture(params=["sync", "async"])
def call(request, fake_time):
    """Run one hook call the sync or the async way: the policy must hold for both."""
    import asyncio

    def run(conn, script, method="GET", **kwargs):
        transport = httpx.MockTransport(script)
        if request.param == "sync":
            with PacklyHook(connection=conn, transport=transport) as hook:
                return hook.request(method, "/v1/x", **kwargs)

        async def arun():
            async with PacklyHook(connection=conn, async_transport=transport) as hook:
                return await hook.arequest(method, "/v1/x", **kwargs)

        return asyncio.run(arun())

    return run


def test_get_survives_transient_failures(make_connection, call):
    script = Script(answer(503), httpx.ReadTimeout("slow"), answer(502), answer(429, **{"Retry-After": "0"}))
    assert call(fast(make_connection), script).json() == {"response": "ok"}
    assert script.api_calls == ["GET"] * 5


def test_post_is_not_resent_after_a_server_failure(make_connection, call):
    script = Script(answer(502))
    with pytest.raises(PacklyAPIError) as caught:
        call(fast(make_connection), script, method="POST", json={"a": 1})
    assert caught.value.http_status == 502 and script.api_calls == ["POST"]


def test_post_is_not_resent_after_a_read_timeout(make_connection, call):
    script = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(
        PacklyTransportError, match=r"POST http://127.0.0.1:8089/v1/x got no answer within the 2 s read timeout"
    ):
        call(fast(make_connection, read_timeout=2), script, method="POST", json={})
    assert script.api_calls == ["POST"]


def test_post_is_resent_when_packly_said_it_did_not_process_it(make_connection, call):
    script = Script(
        answer(429, **{"Retry-After": "0"}), answer(503, **{"Retry-After": "0"}), httpx.ConnectError("refused")
    )
    assert call(fast(make_connection), script, method="POST", json={}).status_code == 200
    assert script.api_calls == ["POST"] * 4


def test_attempts_are_bounded_and_named(make_connection, call):
    script = Script(*[answer(503)] * 10)
    with pytest.raises(PacklyAPIError, match=r"with HTTP 503 \(after 3 attempts\)"):
        call(fast(make_connection, retry_max_attempts=3), script)
    assert len(script.api_calls) == 3


def test_total_time_is_bounded(make_connection, call, fake_time):
    script = Script(*[answer(429, **{"Retry-After": "5"})] * 10)
    with pytest.raises(PacklyAPIError) as caught:
        call(fast(make_connection, retry_max_seconds=1), script)
    assert caught.value.http_status == 429
    assert script.api_calls == ["GET"]  # a 5 s wait would end past the 1 s budget: no retry
    assert fake_time.waits == []


def test_total_time_counts_the_waits_already_made(make_connection, call, fake_time):
    script = Script(*[answer(429, **{"Retry-After": "2"})] * 10)
    with pytest.raises(PacklyAPIError, match=r"after 3 attempts"):
        call(fast(make_connection, retry_max_seconds=5), script)
    assert fake_time.waits == [2.0, 2.0]  # a third 2 s wait would end 6 s in, past the 5 s budget
    assert script.api_calls == ["GET"] * 3


def test_retry_after_is_honoured(make_connection, call, fake_time):
    script = Script(answer(429, **{"Retry-After": "1"}))
    call(fast(make_connection), script)
    assert fake_time.waits == [1.0]
    assert script.api_calls == ["GET"] * 2


def test_retry_after_is_cut_to_its_cap(make_connection, call, fake_time):
    script = Script(answer(429, **{"Retry-After": "3600"}))
    call(fast(make_connection, retry_after_max_seconds=2, retry_max_seconds=10), script)
    assert fake_time.waits == [2.0]


def test_waits_back_off_with_full_jitter_between_sends(make_connection, call, fake_time):
    script = Script(answer(503), answer(503), answer(503))
    conn = make_connection(retry_backoff_seconds=0.5, retry_backoff_max_seconds=0.75)
    assert call(conn, script).status_code == 200
    assert len(fake_time.waits) == 3
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(fake_time.waits, [0.5, 0.75, 0.75]))


def test_one_means_no_retries(make_connection, call):
    script = Script(answer(503))
    with pytest.raises(PacklyAPIError):
        call(fast(make_connection, retry_max_attempts=1), script)
    assert len(script.api_calls) == 1


def test_token_endpoint_retries_transient_failures_not_rejections(make_connection, call):
    script = Script(token_steps=(answer(503), httpx.ReadTimeout("slow")))
    assert call(fast(make_connection), script).status_code == 200
    assert script.token_calls == 3

    rejected = Script(token_steps=(httpx.Response(401, json={"response": {"code": "UNAUTHORIZED", "message": "no"}}),))
    with pytest.raises(PacklyAuthError, match="HTTP 401"):
        call(fast(make_connection, client_secret="another-secret"), rejected)
    assert rejected.token_calls == 1


def test_token_endpoint_failure_after_retries_says_so(make_connection, call):
    script = Script(token_steps=(answer(503),) * 3)
    with pytest.raises(PacklyAuthError, match=r"HTTP 503 after 3 attempts"):
        call(fast(make_connection, retry_max_attempts=3), script)


def test_each_retry_is_logged_at_info_without_secrets(make_connection, call, caplog):
    caplog.set_level(logging.DEBUG)
    call(fast(make_connection), Script(answer(503), answer(429, **{"Retry-After": "0"})))
    retries = [r for r in caplog.records if r.name == "airflow_provider_packly.retries"]
    assert [r.levelname for r in retries] == ["INFO", "INFO"]
    assert retries[0].getMessage().startswith("Packly GET /v1/x: HTTP 503; retry 1 of 4 in ")
    assert retries[1].getMessage() == "Packly GET /v1/x: HTTP 429 (rate limited); retry 2 of 4 in 0.00 s"
    assert not any(CLIENT_SECRET in r.getMessage() or ACCESS_TOKEN in r.getMessage() for r in caplog.records)
