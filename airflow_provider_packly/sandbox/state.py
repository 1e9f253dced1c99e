"""The sandbox's live, thread-safe state: tokens, counters, the order clock, faults, writes.

The server runs in uvicorn's event loop (often in a background thread, see
:func:`~airflow_provider_packly.sandbox.server.run_sandbox`) while tests read the counters
from another thread, so every access goes through one :class:`threading.Lock`.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Literal

from airflow_provider_packly.sandbox.config import SandboxConfig
from airflow_provider_packly.sandbox.faults import (
    FAULT_LOG_LIMIT,
    Channel,
    FaultConfig,
    FaultDecision,
    FaultPicker,
)

TokenStatus = Literal["valid", "expired", "unknown"]


def new_opaque_token() -> str:
    """Return a fresh access token shaped like Packly's documented example.

    Packly's example token is ``AAAA%2FAAA%3DAAAAAAAA``: it literally contains the
    percent-escapes ``%2F`` and ``%3D``. The sandbox's tokens contain them too, and the server
    compares bearer tokens as exact strings, so a client that URL-decodes or re-encodes the
    token (instead of sending it back byte for byte) gets a 401.
    """
    return "AAAA%2F" + secrets.token_urlsafe(24) + "%3D"


class SandboxState:
    """Counters, tokens and the order clock of one sandbox app (``app.state.sandbox``).

    Attributes read by tests (all snapshots taken under the lock):

    * ``token_requests``: every ``POST /v1/oauth2/token``, successful or not;
    * ``token_requests_ok``: the ones that issued a token;
    * ``api_requests``: a :class:`collections.Counter` of requests by path, for every path
      under ``/v1/`` except the token endpoint (authorized or not, known or not);
    * ``issued_tokens``: every token ever issued, revoked or expired included, so a test can
      scan logs and output for them;
    * ``faults``: the active :class:`~airflow_provider_packly.sandbox.faults.FaultConfig`
      (``config.faults`` at first, then whatever :meth:`set_faults` set);
    * ``fault_counts`` / ``token_fault_counts``: decisions by kind (``"none"`` included) for
      API and write requests / for token requests; ``fault_log``: the newest decisions;
    * ``forced_revocations``: ``revoke`` faults that revoked at least one token;
    * ``writes`` / ``write_attempts``: per key, writes applied / POST requests received by
      ``/_sandbox/v1/writes`` (whatever their outcome); ``write_outcomes``: write requests
      by ``(fault kind, applied)``.

    A token is valid until ``issued_at + config.token_lifetime`` on ``config.now``.

    Order timelines start per order, the first time a listing serves that order (see
    :meth:`order_elapsed`), not when the sandbox starts: a sandbox that has been up for an
    hour still shows ``ORD-0001`` at ``waiting_execute_payment`` to the first DAG that looks.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._token_requests = 0
        self._token_requests_ok = 0
        self._api_requests: Counter[str] = Counter()
        self._issued_tokens: list[str] = []
        self._expiry_by_token: dict[str, float] = {}
        self._clock_origin = config.now()
        self._first_listed: dict[int, float] = {}
        self._faults: FaultConfig | None = None
        self._api_picker: FaultPicker | None = None
        self._token_picker: FaultPicker | None = None
        self._fault_seq = 0
        self._fault_counts: Counter[str] = Counter()
        self._token_fault_counts: Counter[str] = Counter()
        self._fault_log: deque[FaultDecision] = deque(maxlen=FAULT_LOG_LIMIT)
        self._forced_revocations = 0
        self._writes: Counter[str] = Counter()
        self._write_attempts: Counter[str] = Counter()
        self._write_outcomes: Counter[tuple[str, bool]] = Counter()
        self.set_faults(config.faults)

    # -- counters ---------------------------------------------------------------------------
    @property
    def token_requests(self) -> int:
        """Number of POSTs to the token endpoint, successful or not."""
        with self._lock:
            return self._token_requests

    @property
    def token_requests_ok(self) -> int:
        """Number of token requests that issued a token."""
        with self._lock:
            return self._token_requests_ok

    @property
    def api_requests(self) -> Counter[str]:
        """A copy of the per-path counter of API requests (token endpoint excluded)."""
        with self._lock:
            return Counter(self._api_requests)

    @property
    def issued_tokens(self) -> list[str]:
        """A copy of the list of every token ever issued, oldest first."""
        with self._lock:
            return list(self._issued_tokens)

    def count_token_request(self) -> None:
        """Record one POST to the token endpoint (called before any validation)."""
        with self._lock:
            self._token_requests += 1

    def count_api_request(self, path: str) -> None:
        """Record one request to ``path`` (a path under ``/v1/``, token endpoint excluded)."""
        with self._lock:
            self._api_requests[path] += 1

    # -- tokens -----------------------------------------------------------------------------
    def issue_token(self) -> str:
        """Create, remember and return a new token valid for ``config.token_lifetime``."""
        token = new_opaque_token()
        expires_at = self.config.now() + self.config.token_lifetime
        with self._lock:
            self._token_requests_ok += 1
            self._issued_tokens.append(token)
            self._expiry_by_token[token] = expires_at
        return token

    def token_status(self, token: str) -> TokenStatus:
        """Say whether ``token`` (compared as an exact string) is valid, expired or unknown.

        Revoked tokens are ``"unknown"``: revocation forgets them.
        """
        now = self.config.now()
        with self._lock:
            expires_at = self._expiry_by_token.get(token)
        if expires_at is None:
            return "unknown"
        return "valid" if now < expires_at else "expired"

    def revoke_all_tokens(self) -> int:
        """Forget every outstanding token, so the next API call with any of them gets a 401.

        Returns how many tokens were outstanding. ``issued_tokens`` is kept.
        """
        with self._lock:
            count = len(self._expiry_by_token)
            self._expiry_by_token.clear()
        return count

    # -- faults ------------------------------------------------------------------------------
    @property
    def faults(self) -> FaultConfig | None:
        """The active fault configuration, ``None`` when faults are off."""
        with self._lock:
            return self._faults

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Switch fault injection to ``faults`` (``None``: off) from the next request on.

        The random generators restart from ``faults.seed``, so the requests that follow meet
        the same faults as in a fresh sandbox with that configuration. Counters and the log
        are kept (they are cumulative). ``config.faults`` is left as it was.
        """
        if faults is not None and not isinstance(faults, FaultConfig):
            raise TypeError("faults must be a FaultConfig or None")
        api_picker = token_picker = None
        if faults is not None:
            api_picker = FaultPicker(faults.seed, faults.rate, faults.weights)
            # A separate stream, so token refreshes do not shift the API's fault sequence.
            token_picker = FaultPicker(f"packly-token-{faults.seed}", faults.token_rate, faults.token_weights)
        with self._lock:
            self._faults = faults
            self._api_picker = api_picker
            self._token_picker = token_picker

    def decide_fault(self, channel: Channel, method: str, path: str) -> FaultDecision:
        """Draw and record the fault for one eligible request (one draw, in arrival order)."""
        with self._lock:
            picker = self._api_picker if channel == "api" else self._token_picker
            kind, retry_after = picker.draw() if picker is not None else ("none", False)
            decision = FaultDecision(
                seq=self._fault_seq,
                channel=channel,
                method=method,
                path=path,
                kind=kind,
                retry_after=retry_after,
                config=self._faults,
            )
            self._fault_seq += 1
            (self._fault_counts if channel == "api" else self._token_fault_counts)[kind] += 1
            if decision.is_write:
                decision.write_applied = False
                self._write_outcomes[(kind, False)] += 1
            self._fault_log.append(decision)
        return decision

    @property
    def fault_counts(self) -> Counter[str]:
        """A copy of the API and write requests' decisions by kind (``"none"`` included)."""
        with self._lock:
            return Counter(self._fault_counts)

    @property
    def token_fault_counts(self) -> Counter[str]:
        """A copy of the token requests' decisions by kind (``"none"`` included)."""
        with self._lock:
            return Counter(self._token_fault_counts)

    @property
    def fault_log(self) -> list[FaultDecision]:
        """Copies of the newest decisions (at most ``FAULT_LOG_LIMIT``), oldest first."""
        with self._lock:
            return [dataclasses.replace(decision) for decision in self._fault_log]

    @property
    def forced_revocations(self) -> int:
        """How many ``revoke`` faults revoked at least one outstanding token."""
        with self._lock:
            return self._forced_revocations

    def force_revocation(self) -> int:
        """Revoke every token for a ``revoke`` fault; return how many were still valid.

        Counted in ``forced_revocations`` only if some token was still valid: a revocation
        that finds none (the client is already fetching a new token) costs the client no
        extra token request, so "token requests == 1 + forced revocations" stays exact.
        """
        now = self.config.now()
        with self._lock:
            count = sum(1 for expires_at in self._expiry_by_token.values() if now < expires_at)
            self._expiry_by_token.clear()
            if count:
                self._forced_revocations += 1
        return count

    # -- writes (the sandbox's own endpoint) -------------------------------------------------
    @property
    def writes(self) -> Counter[str]:
        """A copy of the writes applied, per key (2 or more means a duplicated write)."""
        with self._lock:
            return Counter(self._writes)

    @property
    def write_attempts(self) -> Counter[str]:
        """A copy of the write requests received, per key, whatever their outcome."""
        with self._lock:
            return Counter(self._write_attempts)

    @property
    def write_outcomes(self) -> Counter[tuple[str, bool]]:
        """A copy of the write requests by ``(fault kind, applied)``."""
        with self._lock:
            return Counter(self._write_outcomes)

    def record_write_attempt(self, key: str, decision: FaultDecision | None) -> None:
        """Record that a write request for ``key`` arrived (before any check)."""
        with self._lock:
            self._write_attempts[key] += 1
            if decision is not None:
                decision.write_key = key

    def apply_write(self, key: str, decision: FaultDecision | None) -> int:
        """Apply one write to ``key`` and return how many writes ``key`` has now."""
        with self._lock:
            self._writes[key] += 1
            if decision is not None and decision.is_write and not decision.write_applied:
                decision.write_applied = True
                self._write_outcomes[(decision.kind, False)] -= 1
                self._write_outcomes[(decision.kind, True)] += 1
            return self._writes[key]

    def applied_writes(self, key: str) -> int:
        """How many writes ``key`` has."""
        with self._lock:
            return self._writes[key]

    # -- order clock ------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds on ``config.now`` since the app was created or :meth:`reset_clock` ran."""
        with self._lock:
            origin = self._clock_origin
        return max(0.0, self.config.now() - origin)

    def order_elapsed(self, numbers: Sequence[int]) -> list[float]:
        """Seconds each order of ``numbers`` has spent on its timeline, starting those not seen.

        An order's timeline starts (at its time-zero state) the first time a listing serves
        it: an order is "looked at" when it is listed, since Packly has no endpoint to read one
        order by id. So how long the sandbox has been up does not matter, only how long ago a
        client first saw the order. All orders of one page start together. Deterministic on
        ``config.now``.
        """
        now = self.config.now()
        with self._lock:
            return [max(0.0, now - self._first_listed.setdefault(n, now)) for n in numbers]

    def reset_clock(self) -> None:
        """Restart every order's timeline: each starts again when it is next listed."""
        now = self.config.now()
        with self._lock:
            self._clock_origin = now
            self._first_listed.clear()

    # -- reporting --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Return the counters as JSON-ready data; never includes a token or a secret."""
        now = self.config.now()
        with self._lock:
            return {
                "environment": self.config.environment,
                "token_requests": self._token_requests,
                "token_requests_ok": self._token_requests_ok,
                "api_requests": dict(self._api_requests),
                "issued_tokens": len(self._issued_tokens),
                "valid_tokens": sum(1 for exp in self._expiry_by_token.values() if now < exp),
                "elapsed_seconds": max(0.0, now - self._clock_origin),
                "orders_started": len(self._first_listed),
                "faults": self._faults.describe() if self._faults is not None else None,
                "fault_counts": dict(self._fault_counts),
                "token_fault_counts": dict(self._token_fault_counts),
                "forced_revocations": self._forced_revocations,
                "write_attempts": sum(self._write_attempts.values()),
                "writes_applied": sum(self._writes.values()),
                "write_keys": len(self._writes),
                "write_keys_duplicated": sum(1 for n in self._writes.values() if n >= 2),
                "write_outcomes": {
                    f"{kind}:{'applied' if applied else 'not_applied'}": count
                    for (kind, applied), count in sorted(self._write_outcomes.items())
                    if count
                },
            }
