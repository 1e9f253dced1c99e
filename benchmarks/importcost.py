"""DAG-parse cost: what importing the provider's modules adds to ``import airflow.sdk``.

Each run is a fresh interpreter under ``python -X importtime``, importing ``airflow.sdk``, then
the provider's operators and sensors (what a DAG file imports), then its hooks and triggers.
``-X importtime`` prints one line per module when its import finishes, nested imports first;
every top-level line printed after ``airflow.sdk``'s own is an import the provider caused
(including parts of Airflow that ``airflow.sdk`` loads lazily on first use), and their
cumulative times add up to the provider's cost. Each stage's share is the top-level lines up to
its module's own line. The median over the runs is reported, with the heaviest modules pulled
in, and whether any run imported aiohttp (issue 12, goal 4: it costs ~230 ms and may be imported
only when an async client is first created).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks._common import Spread

#: What is imported after ``airflow.sdk``, in order: (stage, module). The first two stages are
#: what a DAG file imports; the old goal "operators and sensors add < 30 ms" reads those.
STAGES = (
    ("operators", "airflow_provider_packly.operators.packly"),
    ("sensors", "airflow_provider_packly.sensors.packly"),
    ("hooks", "airflow_provider_packly.hooks.packly"),
    ("triggers", "airflow_provider_packly.triggers.packly"),
)
PROVIDER_IMPORT = "import airflow.sdk; " + "; ".join(f"import {module}" for _, module in STAGES)
DAG_STAGES = ("operators", "sensors")
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass
class ImportLine:
    self_us: int
    cumulative_us: int
    depth: int
    module: str


def parse_importtime(stderr: str) -> list[ImportLine]:
    lines = []
    for raw in stderr.splitlines():
        match = _LINE.match(raw)
        if match:
            self_us, cumulative_us, indent, module = match.groups()
            lines.append(ImportLine(int(self_us), int(cumulative_us), (len(indent) - 1) // 2, module))
    return lines


def after_sdk(lines: list[ImportLine]) -> list[ImportLine]:
    """The lines printed after ``airflow.sdk`` finished importing (the provider's share)."""
    for index, line in enumerate(lines):
        if line.module == "airflow.sdk" and line.depth == 0:
            return lines[index + 1 :]
    raise ValueError("airflow.sdk was not found in the -X importtime output")


def stage_ms(lines: list[ImportLine]) -> dict[str, float]:
    """Each stage's milliseconds: the top-level lines after the previous stage's module line, up
    to and including its own module's (a stage whose module an earlier stage imported costs 0)."""
    out = {}
    top = [line for line in lines if line.depth == 0]
    start = 0
    for stage, module in STAGES:
        end = next((i for i, line in enumerate(top) if line.module == module), start - 1)
        out[stage] = sum(line.cumulative_us for line in top[start : end + 1]) / 1000
        start = max(start, end + 1)
    return out


def imports_aiohttp(lines: list[ImportLine]) -> bool:
    return any(line.module.split(".")[0] in ("aiohttp", "httpx_aiohttp") for line in lines)


def one_run_lines() -> list[ImportLine]:
    finished = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROVIDER_IMPORT],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "0"},
        check=True,
    )
    return parse_importtime(finished.stderr)


def one_run() -> list[ImportLine]:
    return after_sdk(one_run_lines())


def measure(runs: int, *, warm: bool = True) -> dict[str, Any]:
    if warm:
        one_run()  # warm the file system cache and the bytecode caches
    dag_totals: list[float] = []
    all_totals: list[float] = []
    stages: dict[str, list[float]] = {stage: [] for stage, _ in STAGES}
    heaviest: dict[str, list[int]] = {}
    module_count = 0
    aiohttp_imported = aiohttp_by_sdk = False
    for _ in range(runs):
        every = one_run_lines()
        lines = after_sdk(every)
        aiohttp_by_sdk |= imports_aiohttp(every[: len(every) - len(lines)])
        aiohttp_imported |= imports_aiohttp(lines)
        by_stage = stage_ms(lines)
        for stage, ms in by_stage.items():
            stages[stage].append(ms)
        dag_totals.append(sum(by_stage[stage] for stage in DAG_STAGES))
        all_totals.append(sum(line.cumulative_us for line in lines if line.depth == 0) / 1000)
        module_count = len(lines)
        for line in lines:
            heaviest.setdefault(line.module, []).append(line.self_us)
    ranked = sorted(heaviest.items(), key=lambda item: statistics.median(item[1]), reverse=True)
    return {
        "command": f'python -X importtime -c "{PROVIDER_IMPORT}"',
        "runs": runs,
        "provider_ms": Spread.of(dag_totals).as_dict(),
        "all_ms": Spread.of(all_totals).as_dict(),
        "stages_ms": {stage: Spread.of(values).as_dict() for stage, values in stages.items()},
        "aiohttp_imported": aiohttp_imported,
        "aiohttp_imported_by_airflow_sdk": aiohttp_by_sdk,
        "modules_imported": module_count,
        "heaviest": [{"module": module, "self_ms": statistics.median(times) / 1000} for module, times in ranked[:10]],
        "third_party": sorted(
            {line.split(".")[0] for line in heaviest if not line.startswith(("airflow_provider_packly", "airflow"))}
        ),
    }
