"""Issue 12's goals (async speed), each read as a PASS or a MISS from one run of the suite.

``python -m benchmarks.goals [--quick | --tiny]`` runs only what goals 1, 3 and 4 need (goal 1's
comparison, the sync comparison over loopback, the import cost) and prints their summary;
goal 2 (the triggerer) and goal 5 (the limit) come with the whole suite (``python -m benchmarks``).

Goal 1 is measured here: ``PacklyHook.arequest`` against Airflow's ``HttpAsyncHook`` inside one
``session()``, on the benchmark server over loopback, doing the same GETs, at each concurrency
of ``levels`` (10, 50 and 200 in the full run). At each level the contenders run interleaved
(``overhead.compare_async``: rounds of slices in a rotated order), so a slow phase of the
shared machine hits every one alike, and each ratio is per round: the median [min-max] over
the rounds. The other rows re-measure issue 12's table: raw aiohttp (the baseline of the
"time vs" column), raw ``httpx.AsyncClient``, PacklyHook on httpx's default transport (the
async path before issue 12), PacklyHook over ``httpx-aiohttp``, and PacklyHook given the
provider's own ``AiohttpTransport`` explicitly (reported as unavailable where the provider has
none), and that transport alone, without the hook (the hook's time over it is what its per-call
guarantees cost). The two floor rows are raw aiohttp and raw pyreqwest with only an
``httpx.Request`` and an ``httpx.Response`` built around each call: the least any ``arequest``
returning an ``httpx.Response`` can cost over that engine (``ceiling._HttpxEdges``); the goal
rows read them against ``HttpAsyncHook`` too. ``PacklyHook(conn_id)`` with no transport is the
hook as shipped: whatever its default is.

``summary`` turns the results of a run into the goal rows: goal, what is measured, the measured
value (median [min-max] where there are rounds), the target, and whether it is met.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from typing import Any

from benchmarks._common import Server, Spread
from benchmarks.ceiling import FloorAiohttp, FloorPyreqwest, RawAiohttp
from benchmarks.contenders import (
    AirflowHttpAsyncHookSession,
    AsyncContender,
    AsyncPackly,
    AsyncPacklyAiohttp,
    AsyncPacklyHttpxTransport,
    AsyncPacklyProviderAiohttp,
    AsyncPacklyPyreqwest,
    RawAsyncHttpx,
    RawProviderTransport,
    Target,
)

#: Goal 1's contenders; the first is the baseline of the "time vs" column (issue 12's table).
GOAL1_CONTENDERS: list[type[AsyncContender]] = [
    RawAiohttp,
    AirflowHttpAsyncHookSession,
    AsyncPackly,
    AsyncPacklyProviderAiohttp,
    RawProviderTransport,
    FloorAiohttp,
    FloorPyreqwest,
    AsyncPacklyHttpxTransport,
    AsyncPacklyAiohttp,
    AsyncPacklyPyreqwest,
    RawAsyncHttpx,
]
OURS = AsyncPackly.name
HTTPASYNCHOOK = AirflowHttpAsyncHookSession.name
RAW_AIOHTTP = RawAiohttp.name
#: What the public API alone costs over each engine (``ceiling._HttpxEdges``): goal 1's floor.
FLOORS = {FloorAiohttp.name: "aiohttp", FloorPyreqwest.name: "pyreqwest"}

#: The targets of issue 12.
GOAL1_MAX_RATIO = 0.9
GOAL2_MAX_CPU_MS_PER_POLL = 0.35
GOAL2_MAX_LAG_MS = 50.0
GOAL3_MAX_VS_HTTPHOOK = 1.0
GOAL3_MAX_VS_URLLIB3 = 1.5

#: The triggerer benchmark's "before" variant (``triggerer.run``'s variants).
TRIGGERER_BEFORE = "before: httpx default transport"

ISSUE12_TITLE = "Issue 12 goals"


def labels() -> dict[str, str]:
    return {cls.name: cls.label for cls in GOAL1_CONTENDERS}


def slices_for(calls: int, concurrency: int) -> int:
    """At most 5 slices, each giving every coroutine at least 10 calls (at least one slice)."""
    return max(1, min(5, calls // (10 * concurrency)))


def measure_async(server: Server, *, levels: list[int], calls: int, rounds: int) -> dict[str, Any]:
    """Goal 1's comparison at each concurrency of ``levels`` (the connections must be defined:
    ``AIRFLOW_CONN_BENCH_HTTP`` and ``AIRFLOW_CONN_BENCH_PACKLY``, as ``benchmarks.__main__`` does)."""
    from benchmarks.overhead import compare_async

    target = Target(server.base_url, in_process=False)
    by_level: dict[str, Any] = {}
    for level in levels:
        comparison = compare_async(
            f"goal1-c{level}",
            f"{calls:,} calls over loopback at concurrency {level}",
            target,
            calls=calls,
            rounds=rounds,
            concurrency=level,
            slices=slices_for(calls, level),
            contenders_from=GOAL1_CONTENDERS,
            warmup_calls=max(level, min(100, calls)),  # every coroutine's connection opened
        )
        by_level[str(level)] = comparison.as_dict(OURS)
        if HTTPASYNCHOOK in comparison.seconds:
            by_level[str(level)]["floors_vs_httpasynchook"] = {
                name: comparison.versus(name, HTTPASYNCHOOK).as_dict() for name in FLOORS if name in comparison.seconds
            }
    return {"levels": levels, "calls": calls, "rounds": rounds, "by_level": by_level}


# -- the summary ---------------------------------------------------------------------------------


def _row(
    goal: str,
    what: str,
    value: Spread | None,
    measured: str,
    target: str,
    met: bool,
    note: str = "",
) -> dict[str, Any]:
    return {
        "goal": goal,
        "what": what,
        "value": value.as_dict() if value is not None else None,
        "measured": measured,
        "target": target,
        "met": bool(met),
        "note": note,
    }


def _number(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else "n/a"


def _spread(data: dict[str, float]) -> Spread:
    return Spread(data["median"], data["min"], data["max"])


def _single(value: float) -> Spread:
    return Spread(value, value, value)


def _at_most(value: Spread, limit: float) -> bool:
    return math.isfinite(value.median) and value.median <= limit


def goal1_rows(goal1: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for level in goal1["levels"]:
        comparison = goal1["by_level"][str(level)]
        versus = comparison["versus_ours"].get(HTTPASYNCHOOK)
        contenders = comparison["contenders"]
        what = f"`PacklyHook.arequest` vs `HttpAsyncHook` in one session, concurrency {level}"
        if not versus or not contenders.get(OURS, {}).get("ratio"):
            why = contenders.get(HTTPASYNCHOOK, {}).get("note") or "not measured"
            rows.append(_row("1", what, None, f"n/a ({why})", f"<= {GOAL1_MAX_RATIO}x", False))
            continue
        ratio = _spread(versus)
        ours_us = contenders[OURS]["us_per_call"]["median"]
        theirs_us = contenders[HTTPASYNCHOOK]["us_per_call"]["median"]
        note = f"{ours_us:,.0f} vs {theirs_us:,.0f} µs per call"
        raw = comparison["versus_ours"].get(RAW_AIOHTTP)
        if raw:
            note += f"; {_spread(raw).text()} of raw aiohttp's time"
        floors = comparison.get("floors_vs_httpasynchook", {})
        if floors:
            texts = [f"{FLOORS[name]} {_spread(floor).text()}" for name, floor in floors.items()]
            note += f"; floor (httpx edges alone) vs `HttpAsyncHook`: {', '.join(texts)}"
        rows.append(
            _row("1", what, ratio, ratio.text(), f"<= {GOAL1_MAX_RATIO}x", _at_most(ratio, GOAL1_MAX_RATIO), note)
        )
    return rows


def _cpu_per_trigger_poll(scale: dict[str, Any]) -> float:
    return float(scale.get("cpu_ms_per_trigger_poll", scale["cpu_ms_per_poll"]))


def goal2_rows(triggerer: dict[str, Any]) -> list[dict[str, Any]]:
    """CPU per trigger poll: the triggerer process's CPU over the polls answered (with the shared
    order scan one order-list request answers many triggers; the CPU per request is in the note)."""
    scale = triggerer["scale"]
    count = f"{triggerer['triggers']:,} triggers"
    before = triggerer.get("variants", {}).get(TRIGGERER_BEFORE)
    cpu = _single(_cpu_per_trigger_poll(scale))
    cpu_note = (
        f"{scale.get('trigger_polls', scale['polls']):,} trigger polls answered by {scale['polls']:,} "
        f"order-list requests ({_number(scale['cpu_ms_per_poll'])} ms CPU per request), "
        f"{scale['cpu_seconds']:.2f} s CPU"
    )
    if before and math.isfinite(_cpu_per_trigger_poll(before)) and _cpu_per_trigger_poll(before) > 0:
        cpu_note += (
            f"; before (httpx default transport): {_cpu_per_trigger_poll(before):.3f} ms, "
            f"{cpu.median / _cpu_per_trigger_poll(before):.2f}x of that"
        )
    lag = _single(float(scale["lag_worst_ms"]))
    errors = int(scale.get("errors", scale["finished_early"]))
    error_note = (
        f"{scale['finished_early']} trigger(s) ended (the orders never close), "
        f"{scale.get('warnings_logged', 0)} warning(s) logged"
    )
    return [
        _row(
            "2",
            f"{count}: CPU per trigger poll (default hook)",
            cpu,
            cpu.text(3, " ms"),
            f"<= {GOAL2_MAX_CPU_MS_PER_POLL} ms",
            _at_most(cpu, GOAL2_MAX_CPU_MS_PER_POLL),
            cpu_note,
        ),
        _row(
            "2",
            f"{count}: worst event-loop lag (100 ms heartbeat)",
            lag,
            lag.text(1, " ms"),
            f"< {GOAL2_MAX_LAG_MS:g} ms",
            math.isfinite(lag.median) and lag.median < GOAL2_MAX_LAG_MS,
            f"steady state (after the first interval): {scale['steady_lag_worst_ms']:.1f} ms",
        ),
        _row("2", f"{count}: errors", _single(errors), str(errors), "0", errors == 0, error_note),
    ]


def goal3_rows(sync: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    versus = sync["versus_ours"]
    for name, label, limit, strict in (
        ("airflow-httphook", "`HttpHook`", GOAL3_MAX_VS_HTTPHOOK, True),
        ("raw-urllib3", "raw urllib3", GOAL3_MAX_VS_URLLIB3, False),
    ):
        what = f"`PacklyHook.request` vs {label}, sequential over loopback"
        target = f"{'<' if strict else '<='} {limit}x"
        if name not in versus:
            rows.append(_row("3", what, None, "n/a (not measured)", target, False))
            continue
        ratio = _spread(versus[name])
        met = math.isfinite(ratio.median) and (ratio.median < limit if strict else ratio.median <= limit)
        contenders = sync["contenders"]
        note = (
            f"{contenders['packly-hook']['us_per_call']['median']:,.0f} vs "
            f"{contenders[name]['us_per_call']['median']:,.0f} µs per call; where PacklyHook's time goes: "
            "section 1's breakdown"
        )
        rows.append(_row("3", what, ratio, ratio.text(), target, met, note))
    return rows


def goal4_rows(imports: dict[str, Any]) -> list[dict[str, Any]]:
    imported = bool(imports.get("aiohttp_imported", True))
    total = _spread(imports["all_ms"]) if "all_ms" in imports else _spread(imports["provider_ms"])
    stages = imports.get("stages_ms", {})
    note = "; ".join(f"{name} {_spread(ms).text(1, ' ms')}" for name, ms in stages.items())
    if imports.get("aiohttp_imported_by_airflow_sdk"):
        note += "; aiohttp was already imported by `airflow.sdk` itself"
    return [
        _row(
            "4",
            "DAG parse: importing the provider's hooks, operators, sensors and triggers imports no aiohttp",
            total,
            f"aiohttp imported: {'yes' if imported else 'no'}; the four add {total.text(1, ' ms')}",
            "aiohttp not imported",
            not imported,
            note,
        )
    ]


def goal5_rows(limit: dict[str, Any]) -> list[dict[str, Any]]:
    ceiling = _spread(limit["ceiling_requests_per_second"])
    floor = _spread(limit["fastest_us_per_call"])
    measured = ceiling.text(0, " requests/s") + f"; fastest raw client `{limit['fastest']}`: " + floor.text(0, " µs")
    return [
        _row(
            "5",
            "the server ceiling and the fastest raw client are in the report",
            ceiling,
            measured,
            "both measured",
            math.isfinite(ceiling.median) and math.isfinite(floor.median),
            "section 2, 'The limit'; goal 1's rows are also read against raw aiohttp",
        )
    ]


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's goal rows for whatever ``results`` holds (the suite holds all five)."""
    rows: list[dict[str, Any]] = []
    if "goal1" in results:
        rows += goal1_rows(results["goal1"])
    if "triggerer" in results:
        rows += goal2_rows(results["triggerer"])
    if "loopback" in results and "sync" in results["loopback"]:
        rows += goal3_rows(results["loopback"]["sync"])
    if "imports" in results:
        rows += goal4_rows(results["imports"])
    if results.get("ceiling"):
        rows += goal5_rows(results["ceiling"])
    return rows


def console_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{ISSUE12_TITLE}:"]
    for row in rows:
        verdict = "PASS" if row["met"] else "MISS"
        lines.append(f"  [{verdict}] {row['goal']}. {row['what']}: {row['measured']} (target {row['target']})")
    return lines


# -- standalone ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.goals", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run; numbers not meaningful")
    size.add_argument("--tiny", action="store_true", help="the smallest run; numbers meaningless")
    args = parser.parse_args(argv)

    from benchmarks.__main__ import FULL, QUICK, TINY, step

    settings = TINY if args.tiny else QUICK if args.quick else FULL
    airflow_home = tempfile.mkdtemp(prefix="packly-bench-airflow-home-")
    os.environ["AIRFLOW_HOME"] = airflow_home
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    try:
        from benchmarks import importcost
        from benchmarks._common import bench_server, http_connection_json, packly_connection_json
        from benchmarks.overhead import compare_sync

        results: dict[str, Any] = {}
        with bench_server() as server:
            os.environ["AIRFLOW_CONN_BENCH_HTTP"] = http_connection_json(server.base_url)
            os.environ["AIRFLOW_CONN_BENCH_PACKLY"] = packly_connection_json(server.base_url)
            step(f"goal 1: PacklyHook vs HttpAsyncHook at concurrency {settings.goal_levels}")
            results["goal1"] = measure_async(
                server, levels=settings.goal_levels, calls=settings.goal_calls, rounds=settings.goal_rounds
            )
            step("goal 3: sync over loopback")
            results["loopback"] = {
                "sync": compare_sync(
                    "loop-sync",
                    f"{settings.loop_calls:,} sequential calls over loopback",
                    Target(server.base_url, in_process=False),
                    calls=settings.loop_calls,
                    rounds=settings.rounds,
                ).as_dict("packly-hook")
            }
        step("goal 4: import cost")
        results["imports"] = importcost.measure(settings.import_runs, warm=not (args.quick or args.tiny))
    finally:
        shutil.rmtree(airflow_home, ignore_errors=True)
    from benchmarks.report import goal1_console_lines

    print("\n".join(goal1_console_lines(results)))
    print("\n".join(console_lines(summary(results))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
