"""The sandbox's live, thread-safe state: issued tokens, counters and the order clock.

The server runs in uvicorn's event loop (often in a background thread, see
:func:`~airflow_provider_packly.sandbox.server.run_sandbox`) while tests read the counters
from another thread, so every access goes through one :class:`threading.Lock`.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from airflow_provider_packly.sandbox.app import SandboxConfig

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
      scan logs and output for them.

    A token is valid until ``issued_at + config.token_lifetime`` on ``config.now``.
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

    # -- order clock ------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds on ``config.now`` since the app was created or :meth:`reset_clock` ran."""
        with self._lock:
            origin = self._clock_origin
        return max(0.0, self.config.now() - origin)

    def reset_clock(self) -> None:
        """Restart every order's timeline from its state at time zero."""
        now = self.config.now()
        with self._lock:
            self._clock_origin = now

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
            }
