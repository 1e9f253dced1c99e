"""The I/O shell: everything that opens a connection, sends, waits or reads a body.

* ``clients``: the client options (User-Agent, TLS context, compressed-end check), the
  process's shared per-event-loop async clients, fork safety;
* ``shell``: ``PacklyHttp``, one connection's clients and its sync/async send drivers (the
  overall deadline, body limits, httpx failures as ``PacklyError``, the retry loop);
* ``retrying``: the retry loop driving ``RetryPolicy``'s pure decision;
* ``messages``: building a request, reading an answer (``core.api`` holds the pure rules);
* ``masking``: giving the secrets the provider holds to Airflow's secrets masker.

Nothing here imports Airflow at import time; the hook is the Airflow-facing layer above it.
"""

from __future__ import annotations

from airflow_provider_packly._http import messages
from airflow_provider_packly._http.clients import SHARED_ASYNC_CLIENTS, user_agent
from airflow_provider_packly._http.messages import *
from airflow_provider_packly._http.shell import PacklyHttp, retry_policy_for

__all__ = ["SHARED_ASYNC_CLIENTS", "PacklyHttp", "retry_policy_for", "user_agent"]
__all__ += messages.__all__
