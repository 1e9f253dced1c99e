"""Issue 12's goal summary (``benchmarks.goals``) and the pieces it reads, without running the suite.

Synthetic results in, goal rows out: the targets are read the way issue 12 states them, a
contender the provider does not have is reported as unavailable rather than crashing the
comparison, and the import-cost parser attributes modules to stages and spots aiohttp.
No timing is asserted anywhere.
"""

from __future__ import annotations

import importlib.util
import math

import pytest

from benchmarks import goals, importcost
from benchmarks.contenders import (
    MOCK_BASE_URL,
    PROVIDER_AIOHTTP_TRANSPORT,
    AsyncContender,
    AsyncPacklyProviderAiohttp,
    RawAsyncHttpx,
    Target,
)
from benchmarks.importcost import ImportLine


def _spread(median: float, low: float | None = None, high: float | None = None) -> dict[str, float]:
    return {"median": median, "min": median if low is None else low, "max": median if high is None else high}


def _comparison(versus: dict[str, float], us: dict[str, float]) -> dict:
    return {
        "baseline": goals.RAW_AIOHTTP,
        "calls": 100,
        "contenders": {
            name: {"ratio": _spread(1.0), "us_per_call": _spread(micros), "failures": 0, "rounds": 3}
            for name, micros in us.items()
        },
        "versus_ours": {name: _spread(value, value - 0.05, value + 0.05) for name, value in versus.items()},
    }


def _results(*, goal1: float = 0.85, httphook: float = 0.6, urllib3: float = 1.5) -> dict:
    scale = {
        "polls": 10,
        "trigger_polls": 5000,
        "cpu_seconds": 1.0,
        "cpu_ms_per_poll": 100.0,
        "cpu_ms_per_trigger_poll": 0.2,
        "lag_worst_ms": 30.0,
        "steady_lag_worst_ms": 10.0,
        "finished_early": 0,
        "warnings_logged": 0,
        "errors": 0,
    }
    before = {**scale, "cpu_ms_per_trigger_poll": 0.8}
    return {
        "goal1": {
            "levels": [10, 50],
            "calls": 100,
            "rounds": 3,
            "by_level": {
                str(level): _comparison(
                    {goals.HTTPASYNCHOOK: goal1, goals.RAW_AIOHTTP: 1.2, goals.OURS: 1.0},
                    {goals.RAW_AIOHTTP: 90.0, goals.HTTPASYNCHOOK: 140.0, goals.OURS: 120.0},
                )
                for level in (10, 50)
            },
        },
        "triggerer": {"triggers": 1000, "scale": scale, "variants": {goals.TRIGGERER_BEFORE: before}},
        "loopback": {
            "sync": _comparison(
                {"airflow-httphook": httphook, "raw-urllib3": urllib3, "packly-hook": 1.0},
                {"airflow-httphook": 800.0, "raw-urllib3": 300.0, "packly-hook": 450.0},
            )
        },
        "imports": {
            "provider_ms": _spread(20.0),
            "all_ms": _spread(40.0),
            "stages_ms": {"operators": _spread(15.0), "hooks": _spread(25.0)},
            "aiohttp_imported": False,
        },
        "ceiling": {
            "fastest": "raw-aiohttp",
            "ceiling_requests_per_second": _spread(20000.0),
            "fastest_us_per_call": _spread(90.0),
        },
    }


def _by_goal(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["goal"], []).append(row)
    return out


def test_every_goal_has_rows_with_numbers_and_a_verdict():
    rows = goals.summary(_results())
    by_goal = _by_goal(rows)
    assert set(by_goal) == {"1", "2", "3", "4", "5"}
    assert len(by_goal["1"]) == 2  # one per concurrency
    assert len(by_goal["2"]) == 3  # CPU per poll, lag, errors
    assert len(by_goal["3"]) == 2  # vs HttpHook, vs urllib3
    for row in rows:
        assert isinstance(row["met"], bool)
        assert row["measured"] and row["target"]
        assert row["value"] is not None
        assert all(math.isfinite(row["value"][stat]) for stat in ("median", "min", "max"))
    assert all(row["met"] for row in rows), [row for row in rows if not row["met"]]


def test_the_targets_are_read_as_issue_12_states_them():
    # At most 0.9x HttpAsyncHook's time passes; above it misses.
    assert all(row["met"] for row in _by_goal(goals.summary(_results(goal1=0.9)))["1"])
    assert not any(row["met"] for row in _by_goal(goals.summary(_results(goal1=0.95)))["1"])
    # Ahead of HttpHook is strict; within 1.5x of urllib3 is not.
    sync = _by_goal(goals.summary(_results(httphook=1.0, urllib3=1.5)))["3"]
    assert [row["met"] for row in sync] == [False, True]
    sync = _by_goal(goals.summary(_results(httphook=0.99, urllib3=1.51)))["3"]
    assert [row["met"] for row in sync] == [True, False]


def test_goal_1_rows_read_each_floor_against_httpasynchook():
    results = _results()
    for comparison in results["goal1"]["by_level"].values():
        comparison["floors_vs_httpasynchook"] = {
            "floor-aiohttp-httpx-edges": _spread(0.98, 0.95, 1.01),
            "floor-pyreqwest-httpx-edges": _spread(0.72, 0.7, 0.8),
        }
    notes = [row["note"] for row in _by_goal(goals.summary(results))["1"]]
    assert notes and all(
        "floor (httpx edges alone) vs `HttpAsyncHook`: aiohttp 0.98x [0.95-1.01], pyreqwest 0.72x [0.70-0.80]" in note
        for note in notes
    ), notes
    # A run without the floor rows (an older results file) still reads.
    assert all("floor" not in row["note"] for row in _by_goal(goals.summary(_results()))["1"])


def test_the_triggerer_goal_reads_cpu_per_trigger_poll_lag_and_errors():
    results = _results()
    cpu, lag, errors = _by_goal(goals.summary(results))["2"]
    assert cpu["value"]["median"] == pytest.approx(0.2)  # per trigger poll, not per request
    assert "before (httpx default transport): 0.800 ms" in cpu["note"]
    assert lag["met"] and errors["met"]
    results["triggerer"]["scale"].update(cpu_ms_per_trigger_poll=0.36, lag_worst_ms=50.0, errors=1)
    assert [row["met"] for row in _by_goal(goals.summary(results))["2"]] == [False, False, False]


def test_aiohttp_imported_at_dag_parse_is_a_miss():
    results = _results()
    results["imports"]["aiohttp_imported"] = True
    (row,) = _by_goal(goals.summary(results))["4"]
    assert not row["met"]
    assert "aiohttp imported: yes" in row["measured"]


def test_a_goal_1_row_without_httpasynchook_is_a_miss_not_a_crash():
    results = _results()
    level = results["goal1"]["by_level"]["10"]
    del level["versus_ours"][goals.HTTPASYNCHOOK]
    level["contenders"][goals.HTTPASYNCHOOK] = {"ratio": None, "note": "aiohttp is not installed"}
    rows = _by_goal(goals.summary(results))["1"]
    assert not rows[0]["met"] and "aiohttp is not installed" in rows[0]["measured"]
    assert rows[0]["value"] is None
    assert rows[1]["met"]


def test_the_summary_renders_in_markdown_and_on_the_console():
    from benchmarks.report import ISSUE12_SECTION, issue12_section

    rows = goals.summary(_results(goal1=0.95))
    text = "\n".join(issue12_section({"issue12": rows}))
    assert text.startswith(ISSUE12_SECTION)
    assert text.count("| PASS |") + text.count("| **MISS** |") == len(rows)
    lines = goals.console_lines(rows)
    assert lines[0] == f"{goals.ISSUE12_TITLE}:"
    assert sum(line.startswith(("  [PASS]", "  [MISS]")) for line in lines) == len(rows)


class _Missing(AsyncContender):
    name = "missing-transport"
    label = "a contender whose transport this version lacks"

    @classmethod
    def unavailable(cls) -> str | None:
        return "this version has no such transport"

    def __init__(self, target: Target) -> None:
        raise AssertionError("an unavailable contender must not be built")


def test_an_unavailable_contender_is_reported_not_run():
    from benchmarks.overhead import compare_async

    comparison = compare_async(
        "unit",
        "unit",
        Target(MOCK_BASE_URL, in_process=True),
        calls=4,
        rounds=1,
        concurrency=2,
        slices=1,
        contenders_from=[RawAsyncHttpx, _Missing],
        warmup_calls=2,
    ).as_dict()
    assert comparison["contenders"]["missing-transport"] == {
        "ratio": None,
        "note": "this version has no such transport",
    }
    assert comparison["contenders"]["raw-httpx-async"]["ratio"]["median"] == pytest.approx(1.0)


def test_the_provider_aiohttp_contender_knows_whether_the_transport_exists():
    present = importlib.util.find_spec(PROVIDER_AIOHTTP_TRANSPORT) is not None
    reason = AsyncPacklyProviderAiohttp.unavailable()
    if present and importlib.util.find_spec("aiohttp") is not None:
        assert reason is None
    else:
        assert reason is not None


def test_import_stages_and_aiohttp_are_found_in_importtime_lines():
    lines = [
        ImportLine(10, 1000, 0, "airflow_provider_packly"),
        ImportLine(10, 5000, 0, "airflow_provider_packly.operators.packly"),
        ImportLine(10, 2000, 0, "airflow_provider_packly.sensors.packly"),
        ImportLine(10, 500, 1, "anyio"),
        ImportLine(10, 3000, 0, "httpx"),
        ImportLine(10, 4000, 0, "airflow_provider_packly.hooks.packly"),
        ImportLine(10, 1000, 0, "airflow_provider_packly.triggers.packly"),
    ]
    assert importcost.stage_ms(lines) == {"operators": 6.0, "sensors": 2.0, "hooks": 7.0, "triggers": 1.0}
    assert not importcost.imports_aiohttp(lines)
    assert importcost.imports_aiohttp([*lines, ImportLine(1, 1, 2, "aiohttp.client")])
    # A stage whose module an earlier stage already imported costs nothing.
    assert importcost.stage_ms(lines[:2])["sensors"] == 0.0
