"""When a Packly call is retried, and how long to wait: one policy for sync and async.

The decision is pure and lives in ``core.retry`` (``RetryRules.reason``,
``RetryRules.wait_seconds``, ``parse_retry_after``, which requests are idempotent); this
module re-exports it. ``RetryPolicy.call`` and ``RetryPolicy.acall`` drive it with one short
loop each, alike but for how they send and sleep (the sleep and clock are injectable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import httpx

from airflow_provider_packly.core import retry
from airflow_provider_packly.core.retry import *
from airflow_provider_packly.core.retry import (
    ATTEMPTS_EXTENSION,
    NOT_RESENT_EXTENSION,
    TRANSPORT_FAILURES,
    RetryRules,
    _jitter,  # noqa: F401 (tests reseed it through this module)
)
from airflow_provider_packly.limits import DEADLINE_EXTENSION

__all__ = ["RetryPolicy"]
__all__ += retry.__all__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy(RetryRules):
    """``RetryRules`` (the settings and the pure decision) driven by one loop, sync and async.

    :param sleep: waits between sync sends (tests pass one that only records the wait).
    :param asleep: waits between async sends.
    :param clock: seconds, monotonic, for ``max_seconds``.
    """

    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    asleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def call(self, send_once: Callable[[httpx.Request], httpx.Response], request: httpx.Request) -> httpx.Response:
        """``send_once(request)``, retried by this policy."""
        started, attempt = self.clock(), 1
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = send_once(request)
            except TRANSPORT_FAILURES as exc:
                outcome = exc
            wait = self._next_wait(request, outcome, attempt, started)
            if wait is None:
                return _result(outcome)
            self.sleep(wait)
            attempt += 1

    async def acall(
        self, send_once: Callable[[httpx.Request], Awaitable[httpx.Response]], request: httpx.Request
    ) -> httpx.Response:
        """``call`` for coroutines."""
        started, attempt = self.clock(), 1
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = await send_once(request)
            except TRANSPORT_FAILURES as exc:
                outcome = exc
            wait = self._next_wait(request, outcome, attempt, started)
            if wait is None:
                return _result(outcome)
            await self.asleep(wait)
            attempt += 1

    def _next_wait(
        self, request: httpx.Request, outcome: httpx.Response | Exception, attempt: int, started: float
    ) -> float | None:
        """The wait before the next send of ``request``, or ``None`` to hand ``outcome`` back.

        No retry past ``max_attempts``, none whose wait would end past ``max_seconds`` after the
        first send started, none whose wait would end at or past the call's overall deadline
        (``limits.Deadline``). Each retry is logged at INFO (``scripts/soak.py`` counts them).
        """
        request.extensions[ATTEMPTS_EXTENSION] = attempt
        why = self.reason(request, outcome)
        if why is None:
            if isinstance(outcome, BaseException) and may_have_been_applied(request, outcome):
                request.extensions[NOT_RESENT_EXTENSION] = True
            return None
        if attempt >= self.max_attempts:
            return None
        wait = self.wait_seconds(attempt, outcome)
        if self.clock() - started + wait >= self.max_seconds:
            return None
        deadline = request.extensions.get(DEADLINE_EXTENSION)
        if deadline is not None and deadline.remaining() <= wait:
            return None
        log.info(
            "Packly %s %s: %s; retry %d of %d in %.2f s",
            request.method,
            request.url.path,
            why,
            attempt,
            self.max_attempts - 1,
            wait,
        )
        return wait


def _result(outcome: httpx.Response | Exception) -> httpx.Response:
    """The response, or the failure raised: what the caller of ``call`` gets at the end."""
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
