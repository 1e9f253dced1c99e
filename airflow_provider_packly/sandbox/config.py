"""The sandbox's configuration: everything the sandbox does that Packly leaves open.

Its own module, below the app and the state that both read it, so that the sandbox's modules
depend on each other one way only: ``fault_kinds``, ``errors``, ``responses`` -> ``faults`` ->
``config`` -> ``state`` -> ``app`` -> ``server``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_packly.sandbox.faults import FaultConfig


def default_credentials() -> dict[str, tuple[str, str]]:
    """Return the default (public, test-only) ``(client_id, client_secret)`` per environment."""
    return {
        "sandbox": ("sandbox-client-id", "sandbox-client-secret"),
        "live": ("live-client-id", "live-client-secret"),
    }


def _default_materials() -> dict[str, float]:
    return {"SBS300": 0.62, "SBS350": 0.71, "KRAFT250": 0.48, "E-FLUTE": 0.95}


@dataclass
class SandboxConfig:
    """Everything the sandbox does that Packly leaves open, with defaults.

    * ``environment``: which Packly environment this server plays (``sandbox`` or ``live``).
    * ``credentials``: each environment's ``(client_id, client_secret)``. Packly documents
      that sandbox and live credentials differ; credentials of another environment are
      refused with a 401 saying which environment they belong to. The defaults are public
      test values, not secrets. Hidden from ``repr``.
    * ``token_lifetime``: seconds, the ``expires_in`` returned (Packly's example says 3600;
      the real value is not documented).
    * ``token_type``: Packly's docs spell it both ``bearer`` and ``Bearer``; configurable so a
      client can be tested with both.
    * ``order_step_seconds``: seconds per step of the order timelines (see ``orders``);
      not documented by Packly.
    * ``order_count``: size of the seeded order book (the sandbox's choice).
    * ``orders_default_limit`` / ``orders_max_limit``: ``limit`` default and maximum for
      ``/orders``; not documented by Packly, the sandbox's choice.
    * ``orders_limit_cap``: a test knob (``None``, the default: off). When set, ``/orders``
      answers at most this many orders per page whatever ``limit`` asked for, without saying
      so, as a server that caps ``limit`` silently would. Packly documents no such cap; this
      lets a client prove it does not take a short page for the last one.
    * ``dieline_padding_bytes``: PDF comment bytes added to every die line, to produce large
      responses for streaming tests.
    * ``materials``: the material catalogue, code -> EUR per m² of blank; not documented by
      Packly, the sandbox's choice.
    * ``max_dimension_mm``: largest accepted box dimension; not documented by Packly, the
      sandbox's choice.
    * ``now``: the clock (seconds, monotonic) for token expiry and order timelines;
      injectable for tests.
    * ``faults``: deterministic fault injection (see
      :class:`~airflow_provider_packly.sandbox.faults.FaultConfig`); ``None`` (the default)
      means none. Change it at run time with ``SandboxState.set_faults``.
    """

    environment: str = "sandbox"
    credentials: dict[str, tuple[str, str]] = field(default_factory=default_credentials, repr=False)
    token_lifetime: int = 3600
    token_type: str = "bearer"
    order_step_seconds: float = 2.0
    order_count: int = 25
    orders_default_limit: int = 10
    orders_max_limit: int = 100
    orders_limit_cap: int | None = None
    dieline_padding_bytes: int = 0
    materials: dict[str, float] = field(default_factory=_default_materials)
    max_dimension_mm: float = 2000.0
    now: Callable[[], float] = time.monotonic
    faults: FaultConfig | None = None

    def __post_init__(self) -> None:
        """Reject configurations the server could not honour."""
        if self.environment not in self.credentials:
            raise ValueError(
                f"environment {self.environment!r} has no credentials; known environments: {sorted(self.credentials)}"
            )
        if self.token_lifetime <= 0:
            raise ValueError("token_lifetime must be a positive number of seconds")
        if self.order_step_seconds <= 0:
            raise ValueError("order_step_seconds must be positive")
        if self.order_count < 0 or self.dieline_padding_bytes < 0:
            raise ValueError("order_count and dieline_padding_bytes must not be negative")
        if not 1 <= self.orders_default_limit <= self.orders_max_limit:
            raise ValueError("need 1 <= orders_default_limit <= orders_max_limit")
        if self.orders_limit_cap is not None and self.orders_limit_cap < 1:
            raise ValueError("orders_limit_cap must be None (off) or at least 1")
        if self.faults is not None and not isinstance(self.faults, FaultConfig):
            raise TypeError("faults must be a FaultConfig or None")
