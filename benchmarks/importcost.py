"""DAG-parse cost: what importing the provider's operators and sensors adds to ``import airflow.sdk``.

Each run is a fresh interpreter under ``python -X importtime``. ``-X importtime`` prints one
line per module when its import finishes, nested imports first; every top-level line printed
after ``airflow.sdk``'s own is an import the provider caused (including parts of Airflow that
``airflow.sdk`` loads lazily on first use), and their cumulative times add up to the
provider's cost. The median over the runs is reported, with the heaviest modules pulled in.
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

PROVIDER_IMPORT = (
    "import airflow.sdk; import airflow_provider_packly.operators.packly, airflow_provider_packly.sensors.packly"
)
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


def one_run() -> list[ImportLine]:
    finished = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROVIDER_IMPORT],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "0"},
        check=True,
    )
    return after_sdk(parse_importtime(finished.stderr))


def measure(runs: int, *, warm: bool = True) -> dict[str, Any]:
    if warm:
        one_run()  # warm the file system cache and the bytecode caches
    totals: list[float] = []
    heaviest: dict[str, list[int]] = {}
    module_count = 0
    for _ in range(runs):
        lines = one_run()
        totals.append(sum(line.cumulative_us for line in lines if line.depth == 0) / 1000)
        module_count = len(lines)
        for line in lines:
            heaviest.setdefault(line.module, []).append(line.self_us)
    ranked = sorted(heaviest.items(), key=lambda item: statistics.median(item[1]), reverse=True)
    return {
        "command": f'python -X importtime -c "{PROVIDER_IMPORT}"',
        "runs": runs,
        "provider_ms": Spread.of(totals).as_dict(),
        "modules_imported": module_count,
        "heaviest": [{"module": module, "self_ms": statistics.median(times) / 1000} for module, times in ranked[:10]],
        "third_party": sorted(
            {line.split(".")[0] for line in heaviest if not line.startswith(("airflow_provider_packly", "airflow"))}
        ),
    }
