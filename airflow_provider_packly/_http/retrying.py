"""The retry loop: ``RetryPolicy``'s pure decision driven over real sends and sleeps.

One short loop for sync and one for async, alike but for how they send and sleep (the
policy's ``sleep``/``asleep`` and ``clock`` are injectable, so tests never wait for real).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx

from airflow_provider_packly.core.retry import (
    ATTEMPTS_EXTENSION,
    NOT_RESENT_EXTENSION,
    TRANSPORT_FAILURES,
    may_have_been_applied,
)
from airflow_provider_packly.limits import DEADLINE_EXTENSION
from airflow_provider_packly.metrics import record_retry
from airflow_provider_packly.retries import RetryPolicy

__all__ = ["acall", "call"]

#: The retries' logger: ``scripts/soak.py`` counts the INFO lines it writes.
log = logging.getLogger("airflow_provider_packly.retries")


def call(
    policy: RetryPolicy, send_once: Callable[[httpx.Request], httpx.Response], request: httpx.Request
) -> httpx.Response:
    """``send_once(request)``, retried by ``policy``."""
    started, attempt = policy.clock(), 1
    while True:
        outcome: httpx.Response | Exception
        try:
            outcome = send_once(request)
        except TRANSPORT_FAILURES as exc:
            outcome = exc
        wait = _next_wait(policy, request, outcome, attempt, started)
        if wait is None:
            return _result(outcome)
        policy.sleep(wait)
        attempt += 1


async def acall(
    policy: RetryPolicy, send_once: Callable[[httpx.Request], Awaitable[httpx.Response]], request: httpx.Request
) -> httpx.Response:
    """``call`` for coroutines."""
    started, attempt = policy.clock(), 1
    while True:
        outcome: httpx.Response | Exception
        try:
            outcome = await send_once(request)
        except TRANSPORT_FAILURES as exc:
            outcome = exc
        wait = _next_wait(policy, request, outcome, attempt, started)
        if wait is None:
            return _result(outcome)
        await policy.asleep(wait)
        attempt += 1


def _next_wait(
    policy: RetryPolicy, request: httpx.Request, outcome: httpx.Response | Exception, attempt: int, started: float
) -> float | None:
    """The wait before the next send of ``request``, or ``None`` to hand ``outcome`` back.

    No retry past ``max_attempts``, none whose wait would end past ``max_seconds`` after the
    first send started, none whose wait would end at or past the call's overall deadline
    (``limits.Deadline``). Each retry is logged at INFO (``scripts/soak.py`` counts them).
    """
    request.extensions[ATTEMPTS_EXTENSION] = attempt
    why = policy.reason(request, outcome)
    if why is None:
        if isinstance(outcome, BaseException) and may_have_been_applied(request, outcome):
            request.extensions[NOT_RESENT_EXTENSION] = True
        return None
    if attempt >= policy.max_attempts:
        return None
    wait = policy.wait_seconds(attempt, outcome)
    if policy.clock() - started + wait >= policy.max_seconds:
        return None
    deadline = request.extensions.get(DEADLINE_EXTENSION)
    if deadline is not None and deadline.remaining() <= wait:
        return None
    record_retry(request, outcome)
    log.info(
        "Packly %s %s: %s; retry %d of %d in %.2f s",
        request.method,
        request.url.path,
        why,
        attempt,
        policy.max_attempts - 1,
        wait,
    )
    return wait


def _result(outcome: httpx.Response | Exception) -> httpx.Response:
    """The response, or the failure raised: what the caller of ``call`` gets at the end."""
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
