"""The sandbox's fault kinds, written once (see :mod:`airflow_provider_packly.sandbox.faults`).

A leaf module with no imports, so that ``packly-sandbox --help`` and the scripts can name the
kinds without importing Starlette or the server.
"""

from __future__ import annotations

#: The kinds a fault configuration draws by default, in the order ``--fault-kinds`` lists them.
FAULT_KINDS: tuple[str, ...] = ("500", "502", "503", "429", "reset", "slow", "truncated", "revoke", "truncated-gzip")
#: Kinds drawn only when asked for by name (they slow every client that meets them).
OPT_IN_FAULT_KINDS: tuple[str, ...] = ("trickle", "echo")
#: Every kind there is: the defaults, then the opt-in ones.
EVERY_FAULT_KIND: tuple[str, ...] = FAULT_KINDS + OPT_IN_FAULT_KINDS
#: The HTTP status faults (the token endpoint's default kinds).
STATUS_FAULT_KINDS: tuple[str, ...] = ("500", "502", "503", "429")
#: The kinds answered with a complete HTTP response of their own instead of the endpoint's: the
#: only kinds allowed on the token endpoint, so that a rejection of the credentials (401) stays
#: distinguishable.
RESPONSE_FAULT_KINDS: tuple[str, ...] = (*STATUS_FAULT_KINDS, "echo")
