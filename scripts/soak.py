"""Soak: thousands of calls, sync and async at once, against a sandbox that injects faults.

Run ``./dev soak`` (5,000 calls) or ``./dev soak --calls 1000``. The sandbox runs on real
loopback HTTP with a seeded fault mode (502/503/500 with and without ``Retry-After``, 429,
connection resets, answers slower than the read timeout, truncated bodies, tokens revoked
before they expire, answers trickled a byte at a time that only the overall deadline ends, gzip
bodies cut short behind a matching ``Content-Length``, 502 pages echoing the request's
``Authorization`` header, on the API and the token endpoint). Reads and writes are mixed; every write
carries a unique key, so the sandbox's counters tell a duplicated write from a lost one. It
prints faults injected against
outcomes and checks:

* 0 lost reads: no read returned success with data other than what the sandbox holds, and
  every failed read raised a typed ``PacklyError`` (after bounded retries);
* 0 duplicated writes: no key applied twice, and every write answered 201 applied once;
* every failed call is a typed ``PacklyError``: nothing untyped escapes;
* token requests that issued a token = 1 + the revocations the sandbox forced;
* no call outlived its overall deadline (``DEADLINE_SECONDS``, plus scheduling slack);
* no error message, error ``repr`` or retry log line holds the client secret, its Basic value
  or any token the sandbox issued (the ``echo`` fault quotes them in its pages).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_packly.auth import TOKEN_CACHE
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyAPIError, PacklyError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import FaultConfig, SandboxConfig, run_sandbox
from airflow_provider_packly.sandbox.fault_kinds import EVERY_FAULT_KIND, RESPONSE_FAULT_KINDS

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

WRITES = "/_sandbox/v1/writes"
ORDERS = "/v1/reseller/orders"
#: The soak draws every fault kind there is, and on the token endpoint every one allowed there.
FAULT_KINDS = EVERY_FAULT_KIND
TOKEN_FAULT_KINDS = RESPONSE_FAULT_KINDS
#: Every call's overall deadline (``request_deadline_seconds``): a trickled answer is cut by it.
DEADLINE_SECONDS = 2.0
#: A call counts as over its deadline past this much more (thread and event-loop scheduling on
#: a busy machine; a sync call notices the deadline at the next byte, 20 ms apart).
DEADLINE_SLACK_SECONDS = 1.0


@dataclass
class Tally:
    """Outcomes, counted from every worker (thread-safe)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    lost_reads: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    acknowledged_writes: list[str] = field(default_factory=list)
    failed_writes: list[str] = field(default_factory=list)
    #: What a person or a tool could see of each failure: str and repr along the cause chain.
    seen_texts: list[str] = field(default_factory=list)

    def add(self, what: str, error: BaseException | None = None) -> None:
        with self.lock:
            self.outcomes[what] += 1
            if error is not None:
                kind = type(error).__name__ if isinstance(error, PacklyError) else f"UNTYPED {type(error).__name__}"
                if isinstance(error, PacklyAPIError):
                    kind += f" {error.http_status}"
                self.errors[kind] += 1
                cause: BaseException | None = error
                while cause is not None:
                    self.seen_texts += [str(cause), repr(cause)]
                    cause = cause.__cause__ or cause.__context__


@dataclass(frozen=True)
class SoakReport:
    calls: int
    seconds: float
    fault_counts: dict[str, int]
    token_fault_counts: dict[str, int]
    outcomes: dict[str, int]
    errors: dict[str, int]
    lost_reads: int
    duplicated_writes: int
    unacknowledged_applied_writes: int
    acknowledged_not_applied: int
    untyped_failures: int
    retries: int
    tokens_issued: int
    token_requests: int
    forced_revocations: int
    calls_over_deadline: int = 0
    slowest_call_seconds: float = 0.0
    secret_leaks: int = 0

    @property
    def faulted_share(self) -> float:
        faulted = sum(count for kind, count in self.fault_counts.items() if kind != "none")
        return faulted / max(1, sum(self.fault_counts.values()))

    @property
    def ok(self) -> bool:
        return (
            self.lost_reads == 0
            and self.duplicated_writes == 0
            and self.acknowledged_not_applied == 0
            and self.untyped_failures == 0
            and self.tokens_issued == 1 + self.forced_revocations
            and self.calls_over_deadline == 0
            and self.secret_leaks == 0
        )


def _plan(index: int) -> str:
    """Which call number ``index`` is: 40% writes, 30% read-back of a write, 30% orders page."""
    return (
        "write",
        "write",
        "read-write",
        "read-orders",
        "write",
        "read-write",
        "read-orders",
        "write",
        "read-orders",
        "read-write",
    )[index % 10]


@dataclass(frozen=True)
class _SoakCall:
    """One call of the soak: what to send, and how to judge its outcome (sync and async alike)."""

    kind: str  # "write", "read-write" (read back an earlier write) or "read-orders"
    key: str
    method: str
    path: str
    body: dict[str, Any] | None
    acknowledged_before: bool  # for a read-back: was that write acknowledged before this read was sent?

    @classmethod
    def plan(cls, prefix: str, index: int, acknowledged: set[str]) -> _SoakCall:
        kind = _plan(index)
        if kind == "write":
            key = f"{prefix}{index}"
            return cls(kind, key, "POST", WRITES, {"key": key, "value": index}, False)
        key = f"{prefix}{index - 2}"
        path = f"{WRITES}/{key}" if kind == "read-write" else ORDERS
        return cls(kind, key, "GET", path, None, key in acknowledged)

    def record_success(self, body: Any, tally: Tally, acknowledged: set[str]) -> None:
        with tally.lock:
            if self.kind == "write":
                acknowledged.add(self.key)
                tally.acknowledged_writes.append(self.key)
            elif not _check_read(self.kind, body, self.acknowledged_before):
                tally.lost_reads.append(f"{self.kind} {self.key}")
        tally.add(f"{self.kind} ok")

    def record_failure(self, error: BaseException, tally: Tally) -> None:
        typed = isinstance(error, PacklyError)  # an untyped failure is a defect: counted, soak goes on
        tally.add(f"{self.kind} {'failed' if typed else 'UNTYPED'}", error)
        if self.kind == "write":
            with tally.lock:
                tally.failed_writes.append(self.key)


def _check_read(kind: str, body: Any, acknowledged_before_read: bool) -> bool:
    """Whether a successful read returned the data the sandbox holds.

    A write acknowledged before the read was sent must read as applied once; one still in
    flight (or failed) may read as 0 or 1, never more.
    """
    if kind == "read-orders":
        return isinstance(body.get("response"), list) and all("id" in order for order in body["response"])
    applied = body["response"]["applied"]
    return applied == 1 if acknowledged_before_read else applied in (0, 1)


def run_soak(
    calls: int = 5000, *, seed: int = 7, fault_rate: float = 0.12, threads: int = 4, coroutines: int = 16
) -> SoakReport:
    faults = FaultConfig(
        seed=seed,
        rate=fault_rate,
        kinds=FAULT_KINDS,
        token_rate=0.05,
        slow_seconds=0.4,
        retry_after_seconds=0,
        trickle_seconds=0.02,
        token_kinds=TOKEN_FAULT_KINDS,
    )
    sync_calls = calls // 2
    async_calls = calls - sync_calls
    tally = Tally()
    acknowledged: set[str] = set()
    TOKEN_CACHE.clear()
    retry_log = _RetryCounter()
    with retry_log, run_sandbox(SandboxConfig(faults=faults)) as sandbox:
        connection = PacklyConnection(
            client_id="sandbox-client-id",
            client_secret="sandbox-client-secret",
            base_url=sandbox.base_url,
            read_timeout=0.15,
            retry_max_attempts=5,
            retry_backoff_seconds=0.01,
            retry_backoff_max_seconds=0.05,
            retry_max_seconds=10,
            request_deadline_seconds=DEADLINE_SECONDS,
        )

        def one_sync(hook: PacklyHook, index: int) -> None:
            call = _SoakCall.plan("s", index, acknowledged)
            started = time.monotonic()
            try:
                response = hook.request(call.method, call.path, json=call.body)
            except Exception as exc:  # noqa: BLE001 - every failure is a result the soak records and classifies
                call.record_failure(exc, tally)
            else:
                call.record_success(response.json(), tally, acknowledged)
            finally:
                tally.durations.append(time.monotonic() - started)

        async def one_async(hook: PacklyHook, index: int) -> None:
            call = _SoakCall.plan("a", index, acknowledged)
            started = time.monotonic()
            try:
                response = await hook.arequest(call.method, call.path, json=call.body)
            except Exception as exc:  # noqa: BLE001 - as in one_sync
                call.record_failure(exc, tally)
            else:
                call.record_success(response.json(), tally, acknowledged)
            finally:
                tally.durations.append(time.monotonic() - started)

        def sync_worker(worker: int) -> None:
            with PacklyHook(connection=connection) as hook:
                for index in range(worker, sync_calls, threads):
                    one_sync(hook, index)

        async def async_side() -> None:
            async with PacklyHook(connection=connection) as hook:
                queue = iter(range(async_calls))

                async def worker() -> None:
                    for index in queue:
                        await one_async(hook, index)

                await asyncio.gather(*(worker() for _ in range(coroutines)))

        started = time.monotonic()
        workers = [threading.Thread(target=sync_worker, args=(n,)) for n in range(threads)]
        for thread in workers:
            thread.start()
        asyncio.run(async_side())
        for thread in workers:
            thread.join()
        seconds = time.monotonic() - started

        # A revocation forced by the last calls is only noticed by a next call: make one, fault-free.
        sandbox.state.set_faults(None)
        with PacklyHook(connection=connection) as hook:
            hook.request("GET", ORDERS)

        state = sandbox.state
        writes = state.writes
        report = SoakReport(
            calls=calls,
            seconds=seconds,
            fault_counts=dict(state.fault_counts),
            token_fault_counts=dict(state.token_fault_counts),
            outcomes=dict(tally.outcomes),
            errors=dict(tally.errors),
            lost_reads=len(tally.lost_reads),
            duplicated_writes=sum(1 for count in writes.values() if count >= 2),
            unacknowledged_applied_writes=sum(1 for key in tally.failed_writes if writes.get(key, 0) >= 1),
            acknowledged_not_applied=sum(1 for key in tally.acknowledged_writes if writes.get(key, 0) != 1),
            untyped_failures=sum(count for kind, count in tally.errors.items() if kind.startswith("UNTYPED")),
            retries=retry_log.count,
            tokens_issued=state.token_requests_ok,
            token_requests=state.token_requests,
            forced_revocations=state.forced_revocations,
            calls_over_deadline=sum(1 for d in tally.durations if d > DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS),
            slowest_call_seconds=max(tally.durations, default=0.0),
            secret_leaks=_count_leaks(
                tally.seen_texts + retry_log.messages,
                [connection.client_secret, _basic_value(connection), *state.issued_tokens],
            ),
        )
    TOKEN_CACHE.clear()
    return report


def _basic_value(connection: PacklyConnection) -> str:
    return base64.b64encode(f"{connection.client_id}:{connection.client_secret}".encode()).decode()


def _count_leaks(texts: list[str], secrets: list[str]) -> int:
    """How many of ``texts`` hold any of ``secrets``."""
    return sum(1 for text in texts if any(secret in text for secret in secrets))


class _RetryCounter(logging.Handler):
    """Counts the retry policy's INFO lines (one per retry) and keeps them off the console."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.messages: list[str] = []
        self._logger = logging.getLogger("airflow_provider_packly.retries")

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.messages.append(record.getMessage())

    def __enter__(self) -> Self:
        self._saved = (self._logger.propagate, self._logger.level)
        self._logger.addHandler(self)
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate, level = self._saved
        self._logger.setLevel(level)


def print_report(report: SoakReport) -> None:
    print(f"Soak: {report.calls:,} calls (half sync in threads, half async) in {report.seconds:.1f} s")
    print(
        f"\nFaults injected on API/write requests ({report.faulted_share:.1%} of "
        f"{sum(report.fault_counts.values()):,} requests that reached the sandbox):"
    )
    for kind in (*FAULT_KINDS, "none"):
        print(f"  {kind:14} {report.fault_counts.get(kind, 0):6,}")
    print(f"  token endpoint faults: {dict(sorted(report.token_fault_counts.items()))}")
    print("\nOutcomes (after the retry policy):")
    for what, count in sorted(report.outcomes.items()):
        print(f"  {what:22} {count:6,}")
    print("  errors by type (500 is not retried: Packly may have applied the call):")
    for kind, count in sorted(report.errors.items()):
        print(f"    {kind:28} {count:6,}")
    print(f"  retries made: {report.retries:,}")
    print("\nChecks:")
    rows = [
        ("lost reads", report.lost_reads, "0"),
        ("duplicated writes", report.duplicated_writes, "0"),
        ("writes answered 201 but not applied exactly once", report.acknowledged_not_applied, "0"),
        ("untyped failures", report.untyped_failures, "0"),
        ("tokens issued", report.tokens_issued, f"1 + {report.forced_revocations} forced revocations"),
        (
            f"calls over their {DEADLINE_SECONDS:g} s deadline (+{DEADLINE_SLACK_SECONDS:g} s slack)",
            report.calls_over_deadline,
            "0",
        ),
        ("errors or retry log lines holding a secret or token", report.secret_leaks, "0"),
    ]
    for name, value, goal in rows:
        print(f"  {name:50} {value:6,}   goal {goal}")
    print(f"  (slowest call: {report.slowest_call_seconds:.2f} s)")
    print(
        f"  (failed writes the sandbox had applied, correctly not resent: {report.unacknowledged_applied_writes};"
        f" token endpoint requests in all, retries included: {report.token_requests})"
    )
    print("\nSOAK PASSED" if report.ok else "\nSOAK FAILED")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fault-rate", type=float, default=0.12)
    options = parser.parse_args(argv)
    report = run_soak(options.calls, seed=options.seed, fault_rate=options.fault_rate)
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
