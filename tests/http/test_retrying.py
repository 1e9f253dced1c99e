"""The retry loop (``_http.retrying.call``, ``acall``) directly, on a fake sleep and clock: one loop for both."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest

from airflow_provider_packly._http.retrying import acall, call
from airflow_provider_packly.limits import DEADLINE_EXTENSION, Deadline
from airflow_provider_packly.retries import (
    NOT_RESENT_EXTENSION,
    SINGLE_ATTEMPT_EXTENSION,
    RetryPolicy,
    attempts_made,
)

from ..retry_time import FakeTime


@pytest.fixture(params=["sync", "async"])
def run(request):
    """``run(policy, outcomes, request)``: the policy's answer and the waits, sync or async."""

    def go(policy: RetryPolicy, outcomes: list, sent: httpx.Request) -> tuple[object, list[float], int]:
        fake, pending, sends = FakeTime(), list(outcomes), [0]
        policy = dataclasses.replace(policy, sleep=fake.sleep, asleep=fake.asleep, clock=fake.clock)

        def send_once(_: httpx.Request) -> httpx.Response:
            sends[0] += 1
            step = pending.pop(0)
            if isinstance(step, Exception):
                raise step
            return step

        async def asend_once(request: httpx.Request) -> httpx.Response:
            return send_once(request)

        try:
            if request.param == "sync":
                result: object = call(policy, send_once, sent)
            else:
                result = asyncio.run(acall(policy, asend_once, sent))
        except Exception as exc:
            result = exc
        return result, fake.waits, sends[0]

    return go


def _request(method: str = "GET", **extensions: object) -> httpx.Request:
    built = httpx.Request(method, "https://api.packly.io/v1/x")
    built.extensions.update(extensions)
    return built


def test_the_last_response_is_handed_back_once_attempts_run_out(run):
    sent = _request()
    result, waits, sends = run(RetryPolicy(max_attempts=3, backoff=1), [httpx.Response(503)] * 5, sent)
    assert isinstance(result, httpx.Response) and result.status_code == 503
    assert sends == 3 and len(waits) == 2 and attempts_made(sent) == 3


def test_no_wait_ends_at_or_past_the_overall_deadline(run):
    sent = _request(**{DEADLINE_EXTENSION: Deadline(time.monotonic() + 30, 30)})
    retry_after = {"Retry-After": "40"}
    result, waits, sends = run(
        RetryPolicy(retry_after_max=60, max_seconds=100), [httpx.Response(429, headers=retry_after)], sent
    )
    assert isinstance(result, httpx.Response) and result.status_code == 429
    assert (waits, sends) == ([], 1)


def test_a_single_attempt_request_is_sent_once(run):
    sent = _request(**{SINGLE_ATTEMPT_EXTENSION: True})
    result, waits, sends = run(RetryPolicy(), [httpx.ConnectError("refused"), httpx.Response(200)], sent)
    assert isinstance(result, httpx.ConnectError) and (waits, sends) == ([], 1)


def test_a_write_that_may_have_been_applied_is_marked_not_resent(run):
    sent = _request("POST")
    result, waits, sends = run(RetryPolicy(), [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")], sent)
    assert isinstance(result, httpx.ReadTimeout) and len(waits) == 1 and sends == 2
    assert sent.extensions[NOT_RESENT_EXTENSION] is True and attempts_made(sent) == 2


def test_a_failure_that_is_not_a_transport_failure_is_raised_at_once(run):
    result, waits, sends = run(RetryPolicy(), [ValueError("a bug"), httpx.Response(200)], _request())
    assert isinstance(result, ValueError) and (waits, sends) == ([], 1)
