"""When a Packly call is retried, and how long to wait: one policy for sync and async.

The decision is pure and lives in ``core.retry`` (``RetryRules.reason``,
``RetryRules.wait_seconds``, ``parse_retry_after``, which requests are idempotent); this
module re-exports it and adds the injectable sleep and clock that ``_http.retrying``'s loop
(``call``/``acall``) uses, so tests never wait for real.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from airflow_provider_packly.core import retry
from airflow_provider_packly.core.retry import *
from airflow_provider_packly.core.retry import (
    RetryRules,
    _jitter,  # noqa: F401 (tests reseed it through this module)
)

__all__ = ["RetryPolicy"]
__all__ += retry.__all__


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
