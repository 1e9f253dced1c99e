"""A Packly sandbox for users' tests: a clock the test controls, the seeded orders, a connection.

:func:`start_test_sandbox` serves the sandbox app on a free loopback port (real HTTP, in a
background thread, see :func:`~airflow_provider_packly.sandbox.run_sandbox`) with a
:class:`SandboxClock` as its clock, and yields a :class:`PacklyTestSandbox`: where it listens,
its credentials, its live state, and the controls a DAG test needs (move the clock, put a
seeded order in a given status, revoke tokens, inject faults).

Starlette and uvicorn are imported when a sandbox starts, not when this module is imported.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow_provider_packly.sandbox import orders

if TYPE_CHECKING:
    from airflow_provider_packly.sandbox.config import SandboxConfig
    from airflow_provider_packly.sandbox.faults import FaultConfig
    from airflow_provider_packly.sandbox.state import SandboxState

__all__ = ["PacklyTestSandbox", "SandboxClock", "start_test_sandbox"]

_ORDER_ID = re.compile(r"ORD-(\d{4,})")


class SandboxClock:
    """The sandbox's clock (``SandboxConfig.now``): real time, plus jumps, and a pause.

    It runs with :func:`time.monotonic`, so an order a deferred sensor waits on moves on by
    itself while ``dag.test()`` runs the trigger; :meth:`advance` jumps ahead (token expiry and
    order timelines both follow), :meth:`freeze` stops it until :meth:`resume`. Thread-safe: the
    sandbox reads it from its server thread.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at: float | None = None

    def __call__(self) -> float:
        """Return the sandbox's current time in seconds (monotonic: never goes back)."""
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return self._monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` ahead (frozen or not). A negative jump is refused: time never goes back."""
        if seconds < 0:
            raise ValueError(f"the sandbox clock only moves forward; got advance({seconds!r})")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds

    def freeze(self) -> None:
        """Stop the clock where it is (orders stop moving, tokens stop ageing) until :meth:`resume`."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = self._monotonic() + self._offset

    def resume(self) -> None:
        """Let the clock run again from where it was frozen."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - self._monotonic()
                self._frozen_at = None

    @property
    def frozen(self) -> bool:
        """Whether the clock is frozen."""
        with self._lock:
            return self._frozen_at is not None


def order_number(order_id: str) -> int:
    """Return the number of a seeded order id (``"ORD-0001"`` -> 1); ``ValueError`` for anything else."""
    match = _ORDER_ID.fullmatch(order_id)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"{order_id!r} is not a sandbox order id: the seeded orders are ORD-0001, ORD-0002, ...")
    return int(match.group(1))


@dataclass(frozen=True)
class PacklyTestSandbox:
    """A running sandbox, as a test sees it: address, credentials, state and controls."""

    base_url: str
    """E.g. ``http://127.0.0.1:54321`` (the port the OS chose)."""
    config: SandboxConfig
    state: SandboxState
    """The live counters (``token_requests``, ``api_requests``, ``issued_tokens``, ...)."""
    clock: SandboxClock

    @property
    def environment(self) -> str:
        """The Packly environment this sandbox plays (``sandbox`` unless configured otherwise)."""
        return self.config.environment

    @property
    def client_id(self) -> str:
        """The client ID the sandbox accepts for its environment (a public test value)."""
        return self.config.credentials[self.environment][0]

    @property
    def client_secret(self) -> str:
        """The client secret the sandbox accepts for its environment (a public test value)."""
        return self.config.credentials[self.environment][1]

    def connection_json(self) -> str:
        """The ``packly`` connection for this sandbox, in Airflow's JSON form (``AIRFLOW_CONN_...``)."""
        return json.dumps(
            {
                "conn_type": "packly",
                "login": self.client_id,
                "password": self.client_secret,
                "host": self.base_url,
                "extra": {"environment": self.environment},
            }
        )

    def connection_uri(self) -> str:
        """The same connection in Airflow's URI form (credentials URL-encoded, scheme in the path)."""
        scheme, _, address = self.base_url.partition("://")
        return (
            f"packly://{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}@{address}"
            f"/{scheme}?environment={quote(self.environment, safe='')}"
        )

    # -- clock and orders ---------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move the sandbox clock ``seconds`` ahead: orders move on, tokens age."""
        self.clock.advance(seconds)

    def reset_clock(self) -> None:
        """Restart every order's timeline: each starts again when it is next listed."""
        self.state.reset_clock()

    def order_status(self, order_id: str) -> str:
        """Return the status a listing shows for ``order_id`` now.

        Like a listing, this starts the order's timeline if nothing has listed it yet.
        """
        number = self._seeded(order_id)
        (elapsed,) = self.state.order_elapsed([number])
        return orders.order_status(number, elapsed / self.config.order_step_seconds)

    def fast_forward_order(self, order_id: str, status: str) -> None:
        """Move the clock until ``order_id`` shows ``status`` (its timeline starts here if not yet).

        The whole sandbox moves with it (other orders, token ages). Raises ``ValueError`` when
        the order never reaches ``status`` (e.g. ``closed`` for ``ORD-0007``, which ends
        ``canceled``) or is already past it: call :meth:`reset_clock` first to start again.
        The clock keeps running afterwards unless frozen, so the order moves on from there.
        """
        number = self._seeded(order_id)
        step = self.config.order_step_seconds
        (elapsed,) = self.state.order_elapsed([number])
        current = orders.order_status(number, elapsed / step)
        if current == status:
            return
        # Statuses change only at whole steps; 20 steps covers every seeded timeline (offsets
        # go down to -12, timelines are at most 5 states long).
        first_step = int(elapsed // step) + 1
        for steps in range(first_step, first_step + 20):
            if orders.order_status(number, steps) == status:
                self.clock.advance(steps * step - elapsed)
                return
        reachable = _statuses_ahead(number, elapsed / step)
        raise ValueError(
            f"sandbox order {order_id} is {current!r} and will not become {status!r} (ahead of it: "
            f"{', '.join(repr(s) for s in reachable) or 'nothing, its status is final'}); "
            "call reset_clock() to start its timeline again"
        )

    def revoke_tokens(self) -> int:
        """Forget every token issued so far (the next call with one gets a 401); return how many."""
        return self.state.revoke_all_tokens()

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Inject faults from the next request on (``None``: none); see ``FaultConfig``."""
        self.state.set_faults(faults)

    def _seeded(self, order_id: str) -> int:
        number = order_number(order_id)
        if number > self.config.order_count:
            raise ValueError(
                f"the sandbox has {self.config.order_count} seeded orders (ORD-0001 to "
                f"{orders.order_id(self.config.order_count)}); {order_id} is not one of them"
            )
        return number


def _statuses_ahead(number: int, elapsed_steps: float) -> list[str]:
    seen: list[str] = []
    for steps in range(int(elapsed_steps) + 1, int(elapsed_steps) + 21):
        status = orders.order_status(number, steps)
        if status not in seen:
            seen.append(status)
    current = orders.order_status(number, elapsed_steps)
    return [status for status in seen if status != current]


@contextmanager
def start_test_sandbox(config: SandboxConfig | None = None) -> Iterator[PacklyTestSandbox]:
    """Serve a fresh sandbox on a free loopback port for the ``with`` block, on a :class:`SandboxClock`.

    ``config`` is used as given except for its clock (``now``), which becomes the sandbox
    clock the test controls.
    """
    from airflow_provider_packly.sandbox.config import SandboxConfig
    from airflow_provider_packly.sandbox.server import run_sandbox

    clock = SandboxClock()
    config = dataclasses.replace(config if config is not None else SandboxConfig(), now=clock)
    with run_sandbox(config) as running:
        yield PacklyTestSandbox(base_url=running.base_url, config=config, state=running.state, clock=clock)
