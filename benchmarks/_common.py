"""What every benchmark shares: servers in subprocesses, interleaved rounds, ratio statistics."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"
API_PATH = "/v1/reseller/orders"
TOKEN_PATH = "/v1/oauth2/token"

_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Server:
    """A loopback server in a child process (its own interpreter, so its own GIL)."""

    base_url: str
    process: subprocess.Popen[str]
    stats_path: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + self.stats_path, timeout=10) as answer:
            return json.loads(answer.read())

    def token_requests(self) -> int:
        return int(self.stats()["token_requests"])

    def reset(self, token_delay: float | None = None) -> None:
        """Zero the counters, and set the token endpoint's delay (only the benchmark server has this)."""
        query = "" if token_delay is None else f"?token_delay={token_delay}"
        request = urllib.request.Request(self.base_url + "/_bench/reset" + query, method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()


@contextlib.contextmanager
def serve(argv: Sequence[str], stats_path: str, *, startup_timeout: float = 60.0) -> Iterator[Server]:
    """Run ``python <argv>`` until it prints ``listening on URL``; stop it at the end.

    Its stdout is drained by a thread (a full pipe would block the server); stderr goes to a
    temporary file shown if the server fails to start.
    """
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            found: list[str] = []
            ready = threading.Event()

            def read() -> None:
                for line in process.stdout:  # type: ignore[union-attr]
                    if not found:
                        match = _LISTENING.search(line)
                        if match:
                            found.append(match.group(1))
                            ready.set()
                ready.set()

            threading.Thread(target=read, name="bench-server-stdout", daemon=True).start()
            if not ready.wait(startup_timeout) or not found:
                errors.seek(0)
                raise RuntimeError(f"server {' '.join(argv)} did not start:\n{errors.read()[-3000:]}")
            yield Server(base_url=found[0], process=process, stats_path=stats_path)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def bench_server(token_delay: float = 0.0, token_lifetime: int = 3600) -> contextlib.AbstractContextManager[Server]:
    """The tiny benchmark server (``benchmarks.server``) in a subprocess."""
    argv = ["-m", "benchmarks.server", "--port", "0", "--token-delay", str(token_delay)]
    argv += ["--token-lifetime", str(token_lifetime)]
    return serve(argv, "/_bench/stats")


def sandbox_server(*, order_step_seconds: float, token_lifetime: int) -> contextlib.AbstractContextManager[Server]:
    """The provider's own sandbox (``python -m airflow_provider_packly.sandbox``) in a subprocess."""
    argv = ["-m", "airflow_provider_packly.sandbox", "--port", "0"]
    argv += [
        "--order-step-seconds",
        str(order_step_seconds),
        "--token-lifetime",
        str(token_lifetime),
    ]
    return serve(argv, "/_sandbox/stats")


def packly_connection_json(base_url: str, *, secret: str = CLIENT_SECRET, **extra: Any) -> str:
    """An ``AIRFLOW_CONN_*`` value (JSON form) for a Packly connection to ``base_url``."""
    return json.dumps(
        {
            "conn_type": "packly",
            "login": CLIENT_ID,
            "password": secret,
            "host": base_url,
            "extra": {"environment": "sandbox", **extra},
        }
    )


def http_connection_json(base_url: str) -> str:
    """An ``AIRFLOW_CONN_*`` value for Airflow's ``http`` connection type (no login: no Basic auth)."""
    return json.dumps({"conn_type": "http", "host": base_url})


# -- statistics ---------------------------------------------------------------------------------


@dataclass
class Spread:
    """A median with the [min-max] of the values it summarises."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(finite), min(finite), max(finite))

    def text(self, digits: int = 2, suffix: str = "x") -> str:
        if not math.isfinite(self.median):
            return "n/a"
        return f"{self.median:.{digits}f}{suffix} [{self.low:.{digits}f}-{self.high:.{digits}f}]"

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


@dataclass
class Comparison:
    """Contenders timed on the same work, interleaved, round by round.

    ``seconds[name][r]`` is the wall time of round ``r``; a contender's ratio in a round is its
    time divided by the baseline's time in that same round, so slow phases of the shared
    machine hit both sides of each ratio.
    """

    key: str
    title: str
    baseline: str
    calls: int
    slices: int = 1
    seconds: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)

    def ratios(self, name: str) -> list[float]:
        base = self.seconds[self.baseline]
        return [t / b for t, b in zip(self.seconds[name], base) if b > 0]

    def ratio(self, name: str) -> Spread:
        return Spread.of(self.ratios(name))

    def versus(self, ours: str, name: str) -> Spread:
        """``ours``'s time over ``name``'s, round by round (below 1: ours is faster)."""
        return Spread.of([o / t for o, t in zip(self.seconds[ours], self.seconds[name]) if t > 0])

    def micros_per_call(self, name: str) -> Spread:
        return Spread.of([t / self.calls * 1e6 for t in self.seconds[name]])

    def as_dict(self, ours: str | None = None) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for name in self.seconds:
            rows[name] = {
                "ratio": self.ratio(name).as_dict(),
                "us_per_call": self.micros_per_call(name).as_dict(),
                "rounds": len(self.seconds[name]),
                "failures": self.failures.get(name, 0),
                "note": self.notes.get(name, ""),
            }
        for name, why in self.not_applicable.items():
            rows[name] = {"ratio": None, "note": why}
        versus = {}
        if ours is not None and ours in self.seconds:
            versus = {name: self.versus(ours, name).as_dict() for name in self.seconds}
        return {
            "title": self.title,
            "baseline": self.baseline,
            "calls": self.calls,
            "slices": self.slices,
            "contenders": rows,
            "versus_ours": versus,
        }


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    """``items`` rotated by ``shift``: each round starts with a different contender."""
    if not items:
        return []
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def atimed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def collect_garbage() -> None:
    """A full collection between rounds (not between slices: with Airflow loaded one takes tens
    of milliseconds), so no round inherits another's garbage."""
    gc.collect()


def socket_fds() -> set[str]:
    """The sockets this process holds open (``socket:[inode]`` links in /proc/self/fd)."""
    found = set()
    for entry in os.scandir("/proc/self/fd"):
        try:
            target = os.readlink(entry.path)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index]


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
