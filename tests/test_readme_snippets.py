"""The README's operator snippet must build a valid DAG as written."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_operator_snippet_builds_a_dag():
    from airflow.sdk import DAG

    code = re.search(r"## Operators and sensors\n\n```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    with DAG("readme_snippet", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
        exec(code, {})
    assert {"quote", "dieline", "orders", "call", "wait", "ready"} <= set(dag.task_dict)
