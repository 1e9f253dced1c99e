"""What a core module drags in when imported alone, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys


def modules_loaded_by(module: str) -> set[str]:
    """The top-level package names in ``sys.modules`` after ``import module`` in a new Python."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(result.stdout))


def provider_modules_loaded_by(module: str) -> set[str]:
    """The ``airflow_provider_packly`` modules loaded by ``import module`` in a new Python."""
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('airflow_provider_packly'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(result.stdout))
