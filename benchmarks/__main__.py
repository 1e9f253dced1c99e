"""``python -m benchmarks [--quick | --tiny] [--output-dir DIR] [--json PATH]``: run the whole suite.

Prints the ratio tables and the goals, and writes ``benchmarks.md`` and its plots into the
output directory (``docs/`` of this repository by default).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    inproc_calls: int
    loop_calls: int
    rounds: int
    concurrency: int
    sweep_levels: list[int]
    sweep_calls: int
    sweep_rounds: int
    coroutines: int
    threads: int
    waiters: int
    stall_rounds: int
    triggers: int
    trigger_window: float
    trigger_poll_interval: float
    token_lifetime: int
    token_refresh_margin: float
    import_runs: int
    breakdown_number: int
    masker_sizes: list[int]
    #: Issue 12, goal 1: the concurrencies, calls per contender and round, and rounds.
    goal_levels: list[int]
    goal_calls: int
    goal_rounds: int
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Settings(
    inproc_calls=3000,
    loop_calls=2000,
    rounds=7,
    concurrency=50,
    sweep_levels=[1, 10, 25, 50, 100],
    sweep_calls=600,
    sweep_rounds=3,
    coroutines=100,
    threads=20,
    waiters=100,
    stall_rounds=5,
    triggers=1000,
    trigger_window=25.0,
    trigger_poll_interval=5.0,
    token_lifetime=10,
    token_refresh_margin=1.0,
    import_runs=7,
    breakdown_number=20000,
    masker_sizes=[1, 10, 100, 1000],
    goal_levels=[10, 50, 200],
    goal_calls=3000,  # 1,000 calls in 4 rounds (5 per coroutine at 200) gave ranges from 0.9x to 2.7x
    goal_rounds=6,
)
QUICK = Settings(
    inproc_calls=100,
    loop_calls=100,
    rounds=2,
    concurrency=50,
    sweep_levels=[1, 10],
    sweep_calls=40,
    sweep_rounds=1,
    coroutines=20,
    threads=5,
    waiters=20,
    stall_rounds=1,
    triggers=50,
    trigger_window=3.0,
    trigger_poll_interval=1.0,
    token_lifetime=10,
    token_refresh_margin=1.0,
    import_runs=1,
    breakdown_number=500,
    masker_sizes=[1, 10],
    goal_levels=[10, 50, 200],
    goal_calls=100,
    goal_rounds=2,
)
#: The smallest run that still takes every benchmark through every step and prints every ratio:
#: what the test suite's smoke test runs (``--tiny``). Its numbers mean nothing at all.
TINY = replace(
    QUICK,
    inproc_calls=10,
    loop_calls=10,
    rounds=1,
    concurrency=5,
    sweep_levels=[1, 5],
    sweep_calls=5,
    coroutines=5,
    threads=3,
    waiters=5,
    triggers=5,
    trigger_window=1.0,
    trigger_poll_interval=0.5,
    breakdown_number=10,
    goal_levels=[2, 5],
    goal_calls=10,
    goal_rounds=1,
)

PACKAGES = (
    "airflow-provider-packly",
    "apache-airflow",
    "apache-airflow-providers-http",
    "httpx",
    "httpcore",
    "anyio",
    "tenacity",
    "httpx-auth",
    "authlib",
    "requests",
    "aiohttp",
    "httpx-aiohttp",
    "uvicorn",
    "matplotlib",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run in seconds; numbers not meaningful")
    size.add_argument(
        "--tiny",
        action="store_true",
        help="the smallest run through every benchmark (the test suite's smoke test); numbers meaningless",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO / "docs",
        help="where benchmarks.md and the plots go (default: docs/)",
    )
    parser.add_argument("--json", type=Path, help="also write every result as JSON to this file")
    return parser.parse_args(argv)


def machine_facts(argv: list[str], mode: str, seconds: float) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "`python -m benchmarks" + ("".join(" " + a for a in argv) if argv else "") + "`",
        "mode": mode,
        "run_seconds": f"{seconds:.0f} s",
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def _goal(section: str, goal: str, measured: str, met: bool) -> dict[str, Any]:
    return {"section": section, "goal": goal, "measured": measured, "met": bool(met)}


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    from benchmarks._common import Spread

    def ratio(comparison: dict[str, Any], name: str) -> Spread:
        data = comparison["contenders"][name]["ratio"]
        return Spread(data["median"], data["min"], data["max"])

    out = []
    concurrency = results["settings"]["concurrency"]
    for section, key, what in (
        ("1", "in_process", "in process"),
        ("2", "loopback", "over loopback"),
    ):
        sync = ratio(results[key]["sync"], "packly-hook")
        out.append(
            _goal(
                section,
                f"PacklyHook sync {what} <= 1.05x raw httpx.Client",
                sync.text(),
                sync.median <= 1.05,
            )
        )
        asynchronous = ratio(results[key]["async"], "packly-hook-async")
        out.append(
            _goal(
                section,
                f"PacklyHook async {what} (concurrency {concurrency}) <= 1.05x raw httpx.AsyncClient",
                asynchronous.text(),
                asynchronous.median <= 1.05,
            )
        )
    counts = results["tokens"]["counts"]["PacklyHook"]
    settings = results["settings"]
    for case, label in (
        ("coroutines", f"{settings['coroutines']} concurrent coroutines"),
        ("threads", f"{settings['threads']} concurrent threads"),
        ("wrong_credentials", f"{settings['waiters']} waiters with a wrong secret"),
    ):
        out.append(_goal("3", f"1 token request for {label}", str(counts[case]), counts[case] == 1))
    stall = results["tokens"]["stall"]["packly-hook-async"]["worst_gap_ms"]
    out.append(
        _goal(
            "3",
            "event loop: worst 5 ms-heartbeat interval < 10 ms while PacklyHook fetches a token (300 ms endpoint)",
            Spread(stall["median"], stall["min"], stall["max"]).text(1, " ms"),
            stall["median"] < 10,
        )
    )
    trig = results["triggerer"]
    scale = trig["scale"]
    out.append(
        _goal(
            "4",
            f"{trig['triggers']:,} triggers: <= 1 token request per token lifetime",
            f"{scale['token_requests']} requests / {trig['token_lifetimes_in_window']} lifetime(s) = "
            f"{trig['token_requests_per_lifetime']:.2f}",
            trig["token_requests_per_lifetime"] <= 1,
        )
    )
    out.append(
        _goal(
            "4",
            f"{trig['triggers']:,} triggers: sockets bounded by one pool ({trig['pool_max_connections']})",
            f"{scale['sockets_max']} open at most, {scale['sockets_distinct']} distinct",
            scale["sockets_max"] <= trig["pool_max_connections"],
        )
    )
    per_trigger = trig["memory"]["bytes_per_trigger"]
    out.append(
        _goal(
            "4",
            "memory per waiting trigger < 50 KB",
            f"{per_trigger / 1024:.1f} KiB" + ("" if trig["memory"]["all_waiting"] else " (not all were waiting)"),
            per_trigger < 50_000,
        )
    )
    provider_ms = results["imports"]["provider_ms"]
    out.append(
        _goal(
            "5",
            "DAG parse: the provider's operators and sensors add < 30 ms to import airflow.sdk",
            Spread(provider_ms["median"], provider_ms["min"], provider_ms["max"]).text(1, " ms"),
            provider_ms["median"] < 30,
        )
    )
    return out


def step(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parse_args(raw_argv)
    quick = args.quick or args.tiny
    settings = TINY if args.tiny else QUICK if args.quick else FULL
    started = time.perf_counter()

    # Airflow reads AIRFLOW_HOME at import: never touch the user's own.
    airflow_home = tempfile.mkdtemp(prefix="packly-bench-airflow-home-")
    os.environ["AIRFLOW_HOME"] = airflow_home
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    try:
        results = run(settings, quick)
    finally:
        shutil.rmtree(airflow_home, ignore_errors=True)

    from benchmarks import goals as issue12
    from benchmarks import report
    from benchmarks._common import write_json

    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    results["machine"] = machine_facts(raw_argv, mode, time.perf_counter() - started)
    results["mode"] = mode
    results["goals"] = goals(results)
    results["issue12"] = issue12.summary(results)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    plots = report.plot(results, args.output_dir)
    results["plots"] = [path.name for path in plots]
    (args.output_dir / "benchmarks.md").write_text(report.render_markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results)
    print(report.console_table(results))
    print(
        f"wrote {args.output_dir / 'benchmarks.md'} and {', '.join(p.name for p in plots)} "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return 0


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from benchmarks import ceiling, importcost, overhead, tokens, triggerer
    from benchmarks import goals as issue12
    from benchmarks._common import bench_server, http_connection_json, packly_connection_json
    from benchmarks.contenders import ASYNC_CONTENDERS, MOCK_BASE_URL, SYNC_CONTENDERS, Target

    results: dict[str, Any] = {"settings": asdict(settings)}
    results["labels"] = {cls.name: cls.label for cls in [*SYNC_CONTENDERS, *ASYNC_CONTENDERS]}
    results["labels"].update(issue12.labels())
    n = settings.concurrency

    step("1. per-call overhead in process")
    os.environ["AIRFLOW_CONN_BENCH_HTTP"] = http_connection_json(MOCK_BASE_URL)
    mock = Target(MOCK_BASE_URL, in_process=True)
    results["in_process"] = {
        "sync": overhead.compare_sync(
            "inproc-sync",
            f"{settings.inproc_calls:,} sequential calls in process",
            mock,
            calls=settings.inproc_calls,
            rounds=settings.rounds,
        ).as_dict("packly-hook"),
        "async": overhead.compare_async(
            "inproc-async",
            f"{settings.inproc_calls:,} calls in process at concurrency {n}",
            mock,
            calls=settings.inproc_calls,
            rounds=settings.rounds,
            concurrency=n,
        ).as_dict("packly-hook-async"),
    }

    results["in_process"]["breakdown"] = overhead.breakdown(number=settings.breakdown_number, repeat=5)

    with bench_server() as server:
        os.environ["AIRFLOW_CONN_BENCH_HTTP"] = http_connection_json(server.base_url)
        os.environ["AIRFLOW_CONN_BENCH_PACKLY"] = packly_connection_json(server.base_url)
        os.environ["AIRFLOW_CONN_BENCH_PACKLY_WRONG"] = packly_connection_json(
            server.base_url, secret=tokens.WRONG_SECRET
        )
        loopback = Target(server.base_url, in_process=False)
        step("2. per-call cost over loopback")
        results["loopback"] = {
            "sync": overhead.compare_sync(
                "loop-sync",
                f"{settings.loop_calls:,} sequential calls over loopback",
                loopback,
                calls=settings.loop_calls,
                rounds=settings.rounds,
                server=server,
            ).as_dict("packly-hook"),
            "async": overhead.compare_async(
                "loop-async",
                f"{settings.loop_calls:,} calls over loopback at concurrency {n}",
                loopback,
                calls=settings.loop_calls,
                rounds=settings.rounds,
                concurrency=n,
                server=server,
            ).as_dict("packly-hook-async"),
        }
        step("2. throughput against concurrency")
        results["loopback"]["sweep"] = overhead.concurrency_sweep(
            server,
            levels=settings.sweep_levels,
            calls=settings.sweep_calls,
            rounds=settings.sweep_rounds,
        )

        step("2. the limit: server ceiling and the fastest raw client")
        results["ceiling"] = ceiling.measure(server, calls=settings.loop_calls, rounds=settings.rounds, concurrency=n)

        step(f"issue 12, goal 1: PacklyHook vs HttpAsyncHook at concurrency {settings.goal_levels}")
        results["goal1"] = issue12.measure_async(
            server, levels=settings.goal_levels, calls=settings.goal_calls, rounds=settings.goal_rounds
        )

        step("3. token economy")
        sizes = {
            "coroutines": settings.coroutines,
            "threads": settings.threads,
            "waiters": settings.waiters,
        }
        counts = {
            "PacklyHook": tokens.packly_counts(server, **sizes),
            "httpx-auth": tokens.httpx_auth_counts(server, **sizes),
            "Authlib (auto-refresh)": tokens.authlib_counts(server, mode="auto-refresh", **sizes),
            "Authlib (fetch_token)": tokens.authlib_counts(server, mode="fetch_token", **sizes),
        }
        step("3. event-loop stall during a token fetch")
        stall = tokens.loop_stall(server, rounds=settings.stall_rounds)
        results["tokens"] = {
            "counts": {
                name: {
                    "coroutines": c.coroutines,
                    "threads": c.threads,
                    "wrong_credentials": c.wrong_credentials,
                }
                for name, c in counts.items()
            },
            "notes": [note for c in counts.values() for note in c.notes],
            "method": "\n\n".join(tokens.__doc__.split("\n\n")[1:]).strip(),  # type: ignore[union-attr]
            "economy_token_delay_ms": tokens.ECONOMY_TOKEN_DELAY * 1000,
            "slow_token_delay_ms": tokens.SLOW_TOKEN_DELAY * 1000,
            "heartbeat_ms": tokens.HEARTBEAT_SECONDS * 1000,
            "stall_rounds": settings.stall_rounds,
            "async_client_creation_ms": tokens.async_client_creation_ms(max(3, settings.stall_rounds)).as_dict(),
            "masker_growth": tokens.masker_growth(settings.masker_sizes),
            "stall": {name: {"worst_gap_ms": r.worst_gap_ms.as_dict(), "note": r.note} for name, r in stall.items()},
        }

    step(f"4. triggerer scale: {settings.triggers} triggers for {settings.trigger_window:g} s")
    with tempfile.TemporaryDirectory(prefix="packly-bench-") as scratch:
        results["triggerer"] = triggerer.run(
            triggers=settings.triggers,
            window=settings.trigger_window,
            poll_interval=settings.trigger_poll_interval,
            token_lifetime=settings.token_lifetime,
            token_refresh_margin=settings.token_refresh_margin,
            scratch=Path(scratch),
            aiohttp_variant=not quick,
            before_variant=not quick,
        )

    step("5. DAG parse cost")
    results["imports"] = importcost.measure(settings.import_runs, warm=not quick)
    return results


if __name__ == "__main__":
    sys.exit(main())
