"""When a Packly call is retried, and how long to wait: one policy for sync and async.

The decision is pure (``RetryPolicy.reason``, ``RetryPolicy.wait_seconds``,
``parse_retry_after``); ``RetryPolicy.call`` and ``RetryPolicy.acall`` drive it with one short
loop each, alike but for how they send and sleep (the sleep and clock are injectable).

The rule that keeps writes safe: a request that is not idempotent (POST, PATCH) is resent
only when it provably did not reach Packly (the connection was never made) or Packly said it
did not process it (429, or 503 with ``Retry-After``). Every other failure of a write is
surfaced, because resending could apply it twice. Idempotent requests (GET, HEAD, PUT,
DELETE, OPTIONS) are also retried on any transport failure and on 502, 503 and 504. The token
request is treated as idempotent: a second token is harmless.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import httpx

from airflow_provider_packly.exceptions import PacklyIncompleteBodyError, is_permanent_tls_failure

__all__ = [
    "IDEMPOTENT_EXTENSION",
    "NOT_RESENT_EXTENSION",
    "SINGLE_ATTEMPT_EXTENSION",
    "RetryPolicy",
    "attempts_made",
    "is_idempotent",
    "may_have_been_applied",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})
#: Failures after which the request was provably never sent.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Failures of a request that may have reached Packly, retried only when it is idempotent. A
#: body cut short (``PacklyIncompleteBodyError``, found once it is read) counts as one.
TRANSPORT_FAILURES = (httpx.TransportError, PacklyIncompleteBodyError)
#: Set on a request (``request.extensions``) to retry a POST as if it were idempotent.
IDEMPOTENT_EXTENSION = "packly_idempotent"
#: Set by the policy on a request it did not resend because it may have reached Packly and is
#: not idempotent (a POST whose connection failed once it was sent): ``transport_error`` then
#: says the write may have been applied, instead of blaming reachability.
NOT_RESENT_EXTENSION = "packly_not_resent"
#: Set on a request to send it once whatever happens (an early token refresh: the valid token
#: is used meanwhile and the refresh is tried again later, so retrying now only adds waiting).
SINGLE_ATTEMPT_EXTENSION = "packly_single_attempt"
_ATTEMPTS_EXTENSION = "packly_attempts"

_jitter = random.Random()
if hasattr(os, "register_at_fork"):  # forked workers must not all draw the same "random" waits
    os.register_at_fork(after_in_child=_jitter.seed)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110).

    Delta-seconds are ASCII digits only (``'²'.isdigit()`` is true in Python); anything that
    is neither is ignored (``None``), as RFC 9110 lets a client do.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)  # inf for an absurd number of digits: cut to retry_after_max
    if not value.isascii():
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def attempts_made(request_or_response: httpx.Request | httpx.Response) -> int:
    """How many times a request was sent (1 when it was never retried, or is unknown)."""
    if isinstance(request_or_response, httpx.Response):
        try:
            request_or_response = request_or_response.request
        except RuntimeError:  # a response built without a request (tests)
            return 1
    return int(request_or_response.extensions.get(_ATTEMPTS_EXTENSION, 1))


def is_idempotent(request: httpx.Request) -> bool:
    """Whether sending ``request`` twice does no more than sending it once."""
    return request.method in IDEMPOTENT_METHODS or bool(request.extensions.get(IDEMPOTENT_EXTENSION))


def may_have_been_applied(request: httpx.Request, failure: BaseException) -> bool:
    """A write that failed once it may have reached Packly: never resent, and said so."""
    return (
        isinstance(failure, TRANSPORT_FAILURES)
        and not isinstance(failure, NOT_SENT_ERRORS)
        and not is_idempotent(request)
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded by attempts and by total time; exponential backoff with full jitter.

    :param max_attempts: sends at most, the first included (1 disables retries).
    :param max_seconds: no retry starts if its wait would end past this many seconds after
        the first send started.
    :param backoff: the first wait's ceiling; it doubles per attempt (full jitter: uniform 0..ceiling).
    :param backoff_max: the ceiling's ceiling.
    :param retry_after_max: a ``Retry-After`` longer than this is cut to it.
    :param sleep: waits between sync sends (tests pass one that only records the wait).
    :param asleep: waits between async sends.
    :param clock: seconds, monotonic, for ``max_seconds``.
    """

    max_attempts: int = 5
    max_seconds: float = 60.0
    backoff: float = 0.5
    backoff_max: float = 15.0
    retry_after_max: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    asleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be 1 or more, not {self.max_attempts!r}")
        for name in ("max_seconds", "backoff", "backoff_max", "retry_after_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, not {getattr(self, name)!r}")

    # -- the pure decisions --------------------------------------------------------------------

    def reason(self, request: httpx.Request, outcome: httpx.Response | BaseException) -> str | None:
        """Why this outcome of ``request`` may be retried, or ``None`` if it must not be."""
        if request.extensions.get(SINGLE_ATTEMPT_EXTENSION):
            return None
        idempotent = is_idempotent(request)
        if isinstance(outcome, BaseException):
            if is_permanent_tls_failure(outcome):
                return None  # an untrusted certificate or a refused handshake stays so
            if isinstance(outcome, httpx.LocalProtocolError):
                return None  # this client built a request HTTP cannot carry: resending cannot help
            if isinstance(outcome, NOT_SENT_ERRORS):
                return f"{type(outcome).__name__} (the request was not sent)"
            if isinstance(outcome, TRANSPORT_FAILURES) and idempotent:
                return type(outcome).__name__
            return None
        status = outcome.status_code
        if status == 429:
            return "HTTP 429 (rate limited)"
        if status in RETRYABLE_STATUSES:
            if idempotent:
                return f"HTTP {status}"
            if status == 503 and "retry-after" in outcome.headers:
                return "HTTP 503 with Retry-After (not processed)"
        return None

    def wait_seconds(self, attempt_number: int, outcome: httpx.Response | BaseException | None) -> float:
        """The wait before send number ``attempt_number + 1``: ``Retry-After`` if given, else backoff."""
        if isinstance(outcome, httpx.Response):
            retry_after = parse_retry_after(outcome.headers.get("retry-after"))
            if retry_after is not None:
                return min(retry_after, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff * 2 ** (attempt_number - 1))
        return _jitter.uniform(0, ceiling)
