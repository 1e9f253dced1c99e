"""A local Packly sandbox server: the documented Packly REST API, without a Packly account.

Example DAGs and tests point a Packly connection at it. Public API:

* :class:`SandboxConfig` and :func:`create_app` (a Starlette app, state at
  ``app.state.sandbox``);
* :class:`SandboxState`: counters, issued tokens, ``revoke_all_tokens()``, ``reset_clock()``,
  ``set_faults()``, fault counts and the sandbox write counters;
* :class:`FaultConfig` (``SandboxConfig.faults``): deterministic fault injection, and
  :class:`FaultDecision`, what was decided for one request;
* :func:`run_sandbox`: a context manager serving the app on loopback in a background thread;
* the ``packly-sandbox`` console script (``python -m airflow_provider_packly.sandbox``).

Imports are lazy, so importing this package does not import Starlette or uvicorn.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_packly.sandbox.app import create_app
    from airflow_provider_packly.sandbox.config import SandboxConfig
    from airflow_provider_packly.sandbox.faults import FaultConfig, FaultDecision
    from airflow_provider_packly.sandbox.server import RunningSandbox, run_sandbox
    from airflow_provider_packly.sandbox.state import SandboxState

__all__ = [
    "FaultConfig",
    "FaultDecision",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxState",
    "create_app",
    "run_sandbox",
]

_LOCATIONS: dict[str, str] = {
    "SandboxConfig": "airflow_provider_packly.sandbox.config",
    "create_app": "airflow_provider_packly.sandbox.app",
    "FaultConfig": "airflow_provider_packly.sandbox.faults",
    "FaultDecision": "airflow_provider_packly.sandbox.faults",
    "SandboxState": "airflow_provider_packly.sandbox.state",
    "RunningSandbox": "airflow_provider_packly.sandbox.server",
    "run_sandbox": "airflow_provider_packly.sandbox.server",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
