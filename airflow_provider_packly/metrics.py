"""The provider's Airflow ``Stats`` metrics: every name, every tag and the one way they are sent.

All metric names live here (``docs/metrics.md`` lists them), each prefixed ``packly.``. The
call sites are one line each: ``auth.TokenSource`` (token fetches), ``_http.retrying``
(retries), ``_http.shell.PacklyHttp`` (request latency, sync and async alike) and
``triggers.order_scan.OrderScan`` (scans and waiters).

Two rules hold for every emit:

* A metric never fails a Packly call: any error of the metrics backend (a broken StatsD
  socket, a validator raising, a custom backend's bug) is logged at DEBUG and dropped.
* A metric never carries a secret: tag values come from a fixed vocabulary (``ok``, ``error``,
  ``http_503``, an exception's class name) or from the request's URL *path* (never its query,
  host or headers), with every other segment replaced by ``id`` so that neither an
  identifier nor anything else pasted into a path becomes a tag (and cardinality stays bounded).
  Only plain lowercase words are kept (``endpoint_tag``).

Tags are sent as Airflow ``Stats`` tags (OpenTelemetry attributes, Datadog tags, or InfluxDB-style
StatsD tags when ``[metrics] statsd_influxdb_enabled`` is on). A backend whose methods take no
``tags`` (a custom one) gets the tag values appended to the name instead, name-safe:
``packly.retries.http_503``.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

__all__ = [
    "REQUEST_DURATION",
    "RETRIES",
    "SCANS",
    "SCAN_WAITERS",
    "TOKEN_FAILURES",
    "TOKEN_FETCHES",
    "record_retry",
    "record_scan",
    "timed_request",
    "token_fetch",
]

_log = logging.getLogger(__name__)

#: Counter, one per token fetch sent to Packly (cache hits are not fetches); tag ``outcome``: ``ok``/``error``.
TOKEN_FETCHES = "packly.token.fetches"
#: Counter, one per failed token fetch; tag ``reason``: ``http_<status>`` (e.g. ``http_401``) or the
#: error's class name (``PacklyTransportError``, ``PacklyTimeoutError``, ...).
TOKEN_FAILURES = "packly.token.failures"
#: Counter, one per retry (a resend after a wait); tag ``reason``: ``http_<status>`` or the transport
#: failure's class name (``ConnectError``, ``ReadTimeout``, ...); tag ``endpoint``.
RETRIES = "packly.retries"
#: Timer, one per call (all its retries and the body read included), tags ``endpoint`` and
#: ``outcome``: ``ok`` (a response came back, whatever its status) or ``error`` (the call raised).
REQUEST_DURATION = "packly.request.duration"
#: Counter, one per pass of the shared order scan over the orders list.
SCANS = "packly.scan.count"
#: Gauge, the number of triggers a scan serves, set at each scan.
SCAN_WAITERS = "packly.scan.waiters"

#: The Stats object emits go to (tests replace it with a fake); ``None``: Airflow's, looked up on
#: first use so that importing the provider does not import Airflow's metrics machinery.
stats: Any = None

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_TAG_LENGTH = 100
_WORD = re.compile(r"[a-z][a-z_-]{0,39}[0-9]?")


def _backend() -> Any:
    global stats
    if stats is None:
        # The one path both Airflow 3.2 and 3.3 offer without a deprecation warning
        # (``airflow.stats`` is deprecated; 3.3's module-level ``incr``/``timing`` are not in 3.2).
        from airflow.sdk.observability.stats import Stats

        stats = Stats
    return stats


def _safe(value: str) -> str:
    """``value`` in the characters every backend accepts in a name or a tag, bounded in length."""
    return _UNSAFE.sub("_", value)[:_MAX_TAG_LENGTH] or "_"


def _emit(method: str, name: str, *args: Any, tags: dict[str, str]) -> None:
    """``Stats.<method>(name, *args, tags=tags)``; never raises (see the module's rules)."""
    try:
        call = getattr(_backend(), method)
        try:
            call(name, *args, tags=tags)
        except TypeError:  # a backend without tags: the values go into the name
            call(".".join([name, *tags.values()]), *args)
    except Exception:  # noqa: BLE001 - a metric must never fail the call it measures
        _log.debug("Could not emit the metric %s; the Packly call is not affected.", name, exc_info=True)


def endpoint_tag(request: httpx.Request) -> str:
    """The ``endpoint`` tag of ``request``: its URL path with each segment that is not a plain
    lowercase word (at most one trailing digit, as in ``v1`` or ``oauth2``) replaced by ``id``,
    e.g. ``v1_reseller_orders``: an identifier, a token or a file name never becomes a tag."""
    return _path_tag(request.url.path)


@functools.lru_cache(maxsize=1024)
def _path_tag(path: str) -> str:
    segments = [s for s in path.split("/") if s]
    return _safe("_".join(s if _WORD.fullmatch(s) else "id" for s in segments))


def outcome_reason(outcome: httpx.Response | BaseException) -> str:
    """A short, secret-free reason: ``http_<status>`` for a response or an error carrying an HTTP
    error status (``http_status``, e.g. a refused token request), else the error's class name."""
    if isinstance(outcome, httpx.Response):
        return f"http_{outcome.status_code}"
    status = getattr(outcome, "http_status", None)
    if isinstance(status, int) and status >= 400:  # a 200 with an unusable body is no HTTP failure
        return f"http_{status}"
    return _safe(type(outcome).__name__)


def record_retry(request: httpx.Request, outcome: httpx.Response | BaseException) -> None:
    """Count one retry of ``request`` after ``outcome``."""
    _emit("incr", RETRIES, tags={"endpoint": endpoint_tag(request), "reason": outcome_reason(outcome)})


@contextmanager
def timed_request(request: httpx.Request) -> Iterator[None]:
    """Time the block (one call of ``request``, retries included) as ``packly.request.duration``."""
    started = time.monotonic()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        elapsed = datetime.timedelta(seconds=time.monotonic() - started)
        _emit("timing", REQUEST_DURATION, elapsed, tags={"endpoint": endpoint_tag(request), "outcome": outcome})


@contextmanager
def token_fetch() -> Iterator[None]:
    """Count the block (one token fetch: its send and the reading of the answer) in
    ``packly.token.fetches``, and its failure in ``packly.token.failures``."""
    try:
        yield
    except Exception as exc:  # a cancelled fetch (BaseException) is neither a success nor a failure
        _emit("incr", TOKEN_FETCHES, tags={"outcome": "error"})
        _emit("incr", TOKEN_FAILURES, tags={"reason": outcome_reason(exc)})
        raise
    _emit("incr", TOKEN_FETCHES, tags={"outcome": "ok"})


def record_scan(waiters: int) -> None:
    """Count one pass of the shared order scan serving ``waiters`` triggers.

    ``triggers.order_scan.OrderScan`` calls this once per pass over the orders list, complete,
    stopped early or failed, with the number of waits that pass answered (a failed pass: the
    waits it failed).
    """
    _emit("incr", SCANS, tags={})
    _emit("gauge", SCAN_WAITERS, waiters, tags={})
